//! How the binary reports a failure: one line on stderr, said once, with a hint for the
//! common causes (no server at the address, a root key file from another data directory).
//! No backtrace: these are user errors, and the error types already carry their causes in
//! their messages, so the source chain is not printed again.

use tonic::Code;

/// The line printed for a failed command: the error's message and nothing of its source
/// chain (every error of this crate includes its cause in its message already).
pub fn report(err: &dyn std::fmt::Display) -> String {
    // Multi-line causes (rare: a panic message, a tonic status with details) stay on one line.
    let text = err.to_string();
    let mut line = String::with_capacity(text.len());
    for part in text.split('\n').map(str::trim).filter(|p| !p.is_empty()) {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(part);
    }
    format!("error: {line}")
}

/// The message of a failed connection: the innermost cause (tonic's own message is only
/// "transport error") and, when nothing listens there, the likely reason.
pub(crate) fn connect_message(addr: &str, err: &tonic::transport::Error) -> String {
    let mut innermost: &dyn std::error::Error = err;
    let mut refused = false;
    let mut cause: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cause {
        innermost = e;
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cause = e.source();
    }
    let target = addr.strip_prefix("http://").unwrap_or(addr);
    if refused {
        format!("cannot connect to {target}: connection refused; is `mqtt-tokend serve` running at {target}? (--grpc-addr / MQTT_TOKEND_GRPC_ADDR)")
    } else {
        format!("cannot connect to {target}: {innermost}")
    }
}

/// The message of a call the server refused: the server's own message (it starts with the
/// error code) and a hint for the codes a management command commonly meets.
pub(crate) fn status_message(status: &tonic::Status) -> String {
    let hint = match status.code() {
        Code::Unauthenticated => {
            "; the root key file is not this server's: pass the server's --data-dir (MQTT_TOKEND_DATA_DIR) or --root-key-file"
        }
        Code::Unavailable => "; is `mqtt-tokend serve` still running?",
        _ => "",
    };
    let message = match status.message() {
        "" => status.code().description(),
        m => m,
    };
    if hint.is_empty() {
        message.to_owned()
    } else {
        format!("{}{hint}", message.trim_end_matches('.'))
    }
}

/// The hint for a root key file that cannot be read.
pub(crate) fn root_key_hint(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound => "; `serve` writes it on first start: run this where the server runs, or pass its --data-dir (MQTT_TOKEND_DATA_DIR) or --root-key-file",
        std::io::ErrorKind::PermissionDenied => "; it is readable by the user that runs the server only (mode 0600)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_one_line_with_a_prefix() {
        assert_eq!(report(&"a\n  b\n\nc"), "error: a b c");
    }

    #[test]
    fn status_messages_keep_the_code_and_add_hints() {
        let s = tonic::Status::unauthenticated(
            "InvalidAccessKeySecret: Specified access key secret is not valid.",
        );
        let m = status_message(&s);
        assert!(m.starts_with("InvalidAccessKeySecret: "), "{m}");
        assert!(m.contains("--data-dir"), "{m}");
        let s = tonic::Status::not_found("AccessKeyNotFound: the access key does not exist");
        assert_eq!(
            status_message(&s),
            "AccessKeyNotFound: the access key does not exist"
        );
    }
}
