//! `host:port` addresses as the user wrote them. Host names (`localhost:50051`) are kept as
//! names and resolved when the socket is bound or connected, so `--grpc-addr localhost:50071`
//! works like `127.0.0.1:50071` and the error, if any, names what the user typed.

use std::{fmt, net::SocketAddr, str::FromStr};

/// A `host:port` address: an IP literal (`127.0.0.1:50051`, `[::1]:50051`) or a host name
/// (`localhost:50051`), resolved at bind or connect time. Port 0 picks a free port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host without IPv6 brackets.
    host: String,
    port: u16,
}

impl HostPort {
    /// The host (without IPv6 brackets) and port, as `ToSocketAddrs` takes them.
    pub fn host_port(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not host:port (e.g. 127.0.0.1:50051 or localhost:50051)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
            // An unbracketed IPv6 literal has more colons than a port separator.
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad());
        }
        let port = port.parse().map_err(|_| bad())?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_literals_parse_and_print_back() {
        for s in [
            "127.0.0.1:50051",
            "localhost:50071",
            "[::1]:0",
            "tokend.internal:8080",
        ] {
            let a: HostPort = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        let v6: HostPort = "[::1]:9".parse().unwrap();
        assert_eq!(v6.host_port(), ("::1", 9));
        let from: HostPort = "127.0.0.1:5".parse::<SocketAddr>().unwrap().into();
        assert_eq!(from.to_string(), "127.0.0.1:5");
    }

    #[test]
    fn malformed_addresses_are_refused_with_an_example() {
        for s in [
            "50051",
            ":50051",
            "localhost",
            "localhost:http",
            "::1:50051",
            "a b:1",
            "[::1:5",
        ] {
            let err = s.parse::<HostPort>().unwrap_err();
            assert!(err.contains("host:port"), "{s}: {err}");
        }
    }
}
