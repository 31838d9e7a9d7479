//! The fenced code blocks of a Markdown file and the HTML comment that marks each one.
//!
//! A shell or Python block must be preceded (blank lines aside) by one of:
//! - `<!-- example -->`: run it, in the file's main session (a server the test started);
//! - `<!-- example: session=NAME, needs=TOOL TOOL -->`: run it in session NAME (which starts
//!   its own servers), needing those tools (`sdk` is the official-SDK virtualenv, `plugin`
//!   the Mosquitto plugin build, anything else a command on PATH);
//! - `<!-- example: skip, REASON -->`: do not run it, for the stated reason.
//!
//! Comments are invisible on GitHub, so the README reads as before.

/// Languages whose blocks must be marked.
const CODE_LANGUAGES: [&str; 7] = ["sh", "bash", "shell", "console", "zsh", "python", "py"];

/// What a marker says about the block after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// Run it in `session` when `needs` are there.
    Run {
        /// The session name; `main` has a server started by the test.
        session: String,
        /// Tools the block needs.
        needs: Vec<String>,
    },
    /// Not run, for this reason.
    Skip(String),
}

/// The session of blocks marked without `session=`.
pub const MAIN: &str = "main";

/// One fenced block.
#[derive(Debug, Clone)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The first word of the info string.
    pub lang: String,
    /// The lines between the fences.
    pub code: String,
    /// The marker before it, if any.
    pub marker: Option<Marker>,
}

impl Block {
    /// Whether the block is Python (else shell).
    pub fn is_python(&self) -> bool {
        matches!(self.lang.as_str(), "python" | "py")
    }

    /// Whether the block is code that must be marked.
    pub fn must_be_marked(&self) -> bool {
        CODE_LANGUAGES.contains(&self.lang.as_str())
    }
}

fn parse_marker(inner: &str) -> Result<Marker, String> {
    let rest = inner
        .strip_prefix("example")
        .ok_or_else(|| format!("not an example marker: {inner:?}"))?
        .trim_start()
        .trim_start_matches(':');
    let mut items = rest.split(',').map(str::trim).filter(|i| !i.is_empty());
    let mut session = MAIN.to_owned();
    let mut needs = Vec::new();
    while let Some(item) = items.next() {
        if item == "skip" {
            let reason = items.collect::<Vec<_>>().join(", ");
            if reason.is_empty() {
                return Err(
                    "a skipped example must say why: <!-- example: skip, REASON -->".into(),
                );
            }
            return Ok(Marker::Skip(reason));
        } else if let Some(name) = item.strip_prefix("session=") {
            session = name.to_owned();
        } else if let Some(list) = item.strip_prefix("needs=") {
            needs.extend(list.split_whitespace().map(str::to_owned));
        } else {
            return Err(format!("unknown marker item {item:?}"));
        }
    }
    Ok(Marker::Run { session, needs })
}

/// The fenced blocks of `text`, each with its marker.
///
/// # Errors
/// A marker that does not parse or is not followed by a block, or an unclosed fence; the
/// message names the line.
pub fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, Marker)> = None;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(inner) = trimmed
            .strip_prefix("<!--")
            .and_then(|r| r.strip_suffix("-->"))
            .map(str::trim)
            .filter(|i| i.starts_with("example"))
        {
            if let Some((at, _)) = pending {
                return Err(format!("line {at}: marker not followed by a code block"));
            }
            pending = Some((
                n,
                parse_marker(inner).map_err(|e| format!("line {n}: {e}"))?,
            ));
            continue;
        }
        let Some(fence_info) = trimmed.strip_prefix("```") else {
            if !trimmed.is_empty() {
                if let Some((at, _)) = pending {
                    return Err(format!("line {at}: marker not followed by a code block"));
                }
            }
            continue;
        };
        let lang = fence_info
            .trim_start_matches('`')
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut code = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                closed = true;
                break;
            }
            code.push_str(l);
            code.push('\n');
        }
        if !closed {
            return Err(format!("line {n}: unclosed code fence"));
        }
        out.push(Block {
            line: n,
            lang,
            code,
            marker: pending.take().map(|(_, m)| m),
        });
    }
    match pending {
        Some((at, _)) => Err(format!("line {at}: marker not followed by a code block")),
        None => Ok(out),
    }
}

/// Placeholders a reader would have to fill in (`<AccessKeyId>`, `MTAK…`), outside comments.
pub fn placeholders(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        // Inline comments in the docs follow at least two spaces.
        let code_part = line.split("  #").next().unwrap_or(line);
        if code_part.contains('…') {
            found.push(line.trim().to_owned());
            continue;
        }
        let bytes = code_part.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b != b'<' || !bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
                continue;
            }
            let word_end = bytes[i + 1..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b' '))
                .map(|p| i + 1 + p);
            if word_end.is_some_and(|e| bytes[e] == b'>') {
                found.push(line.trim().to_owned());
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_attach_to_the_next_block() {
        let md = "text\n<!-- example -->\n\n```sh\necho hi\n```\n\n<!-- example: skip, slow -->\n```python\nx\n```\n```json\n{}\n```\n<!-- example: session=demo, needs=mosquitto openssl -->\n```bash\nls\n```\n";
        let b = blocks(md).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(
            b[0].marker,
            Some(Marker::Run {
                session: MAIN.into(),
                needs: vec![]
            })
        );
        assert_eq!((b[0].line, b[0].code.as_str()), (4, "echo hi\n"));
        assert_eq!(b[1].marker, Some(Marker::Skip("slow".into())));
        assert!(b[1].is_python() && b[1].must_be_marked());
        assert_eq!((b[2].marker.clone(), b[2].must_be_marked()), (None, false));
        assert_eq!(
            b[3].marker,
            Some(Marker::Run {
                session: "demo".into(),
                needs: vec!["mosquitto".into(), "openssl".into()]
            })
        );
    }

    #[test]
    fn bad_markers_are_errors() {
        assert!(blocks("<!-- example -->\ntext\n```sh\n```\n").is_err());
        assert!(blocks("<!-- example: skip -->\n```sh\n```\n").is_err());
        assert!(blocks("<!-- example: often -->\n```sh\n```\n").is_err());
        assert!(blocks("```sh\necho\n").is_err());
    }

    #[test]
    fn placeholders_outside_comments_are_found() {
        assert_eq!(
            placeholders(
                "a '<AccessKeyId>'\nTOKEN=…\n# <fine> …\necho x   # MTAK…\ncat <<'PY'\nx < y > z\n"
            ),
            vec!["a '<AccessKeyId>'".to_owned(), "TOKEN=…".to_owned()]
        );
    }
}
