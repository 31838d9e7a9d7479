//! MQTT topic names/filters: validation and matching, shared by the service and the broker plugin.
//!
//! A *name* is what a client publishes to (`a/b/c`); a *filter* is what it subscribes to or what a
//! grant allows (`a/+/c`, `a/#`). Levels are the `/`-separated pieces, and an empty level is a
//! real level (`a//b` has three). Semantics follow MQTT 3.1.1 and 5 (section 4.7), including the
//! rule that a leading wildcard never matches a topic starting with `$` (4.7.2).

/// Why a string is not a valid MQTT topic name or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The empty string: MQTT requires at least one character.
    #[error("topic must not be empty")]
    Empty,
    /// More than [`MAX_TOPIC_LEN`] bytes of UTF-8, which the MQTT wire format cannot carry.
    #[error("topic must be at most 65535 bytes long")]
    TooLong,
    /// Contains U+0000, which the MQTT spec forbids in any UTF-8 string.
    #[error("topic must not contain a NUL character")]
    ContainsNul,
    /// A `+` that is not a whole level on its own (e.g. `a/b+`).
    #[error("the '+' wildcard must be a whole topic level on its own, as in 'a/+/c'")]
    MisplacedPlus,
    /// A `#` that is not the whole last level (e.g. `a/#/b` or `a#`).
    #[error("the '#' wildcard must be the whole last topic level, as in 'a/#'")]
    MisplacedHash,
    /// A topic name (publish target) containing `+` or `#`.
    #[error("a topic name must not contain the wildcards '+' or '#'")]
    WildcardInName,
}

/// Longest topic, in bytes: MQTT prefixes UTF-8 strings with a 16-bit length.
pub const MAX_TOPIC_LEN: usize = 65535;

/// Checks shared by names and filters; order fixes which error a multiply-broken topic reports.
fn validate_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if topic.contains('\0') {
        return Err(TopicError::ContainsNul);
    }
    Ok(())
}

/// A topic filter (subscription / grant): UTF-8 (it's a &str), non-empty, no NUL, at most 65535
/// bytes, `+` only as a whole level, `#` only as the whole last level.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedPlus);
        }
        if level.contains('#') && (level != "#" || !is_last) {
            return Err(TopicError::MisplacedHash);
        }
    }
    Ok(())
}

/// A topic name (publish): as [`validate_filter`] but no `+` or `#` at all.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    validate_common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// The first level of a topic (the whole topic if it has no `/`).
fn first_level(topic: &str) -> &str {
    topic.split_once('/').map_or(topic, |(first, _)| first)
}

/// Whether a filter level is a wildcard; used for the `$` rule, which looks at the first level.
fn is_wildcard(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Does `filter` match the topic `name`? Assumes both are valid (anything else gives an
/// unspecified answer, never a panic). MQTT 3.1.1/5 semantics: `+` matches exactly one level
/// (including an empty level), `#` matches the parent level and any number of child levels
/// (`a/#` matches `a` and `a/b/c`), and a filter whose first level is `+` or `#` does not match a
/// name starting with `$` (MQTT spec 4.7.2).
pub fn matches(filter: &str, name: &str) -> bool {
    // `$SYS/...` and friends are server-internal; a blanket `#` or `+/...` must not reach them.
    if name.starts_with('$') && is_wildcard(first_level(filter)) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    loop {
        match (filter_levels.next(), name_levels.next()) {
            // `#` takes whatever is left, including nothing: that is how `a/#` matches `a`.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            // A literal mismatch, or one side has levels the other lacks.
            _ => return false,
        }
    }
}

/// Does `granted` cover `requested` (both filters, assumed valid)? True iff every topic name that
/// `requested` can match is also matched by `granted`. E.g. `a/#` covers `a/+/c`, `a/#` and `a`;
/// `a/+/c` covers `a/b/c` and `a/+/c` but not `a/#`; `a/b/c` does not cover `a/+/c`; `#` covers
/// everything not starting with `$`; a requested filter starting with `$` (e.g. `$SYS/#`) is
/// covered only by a granted filter whose first level is that same literal `$...` level.
pub fn covers(granted: &str, requested: &str) -> bool {
    // A `$` first level is a literal in `requested`, so it matches `$` names only, and a leading
    // wildcard in `granted` never matches those. The converse (leading wildcard in `requested`,
    // literal `$x` in `granted`) needs no rule: the level-by-level walk below already rejects a
    // wildcard requested level against a literal granted one.
    if requested.starts_with('$') && is_wildcard(first_level(granted)) {
        return false;
    }
    // `/#` would match its parent, the empty name, were that a valid name; it is not, so `/#`
    // matches exactly what `/+/#` matches (e.g. `+/+/#` covers it). This is the only filter
    // whose sole level-count-minimal instance is the empty name.
    if requested == "/#" {
        return covers(granted, "/+/#");
    }
    let mut granted_levels = granted.split('/');
    let mut requested_levels = requested.split('/');
    let mut at_first_level = true;
    loop {
        let step = (granted_levels.next(), requested_levels.next());
        let was_first_level = at_first_level;
        at_first_level = false;
        match step {
            // Everything `requested` matches agrees with `granted` on the levels before this
            // one, and `granted` accepts anything (even nothing) from here on. This includes
            // requested ending here (`a/#` covers `a`) and requested `#` here (`a/#` covers `a/#`).
            (Some("#"), _) => return true,
            // Requested `#` matches the parent, i.e. names that end before this level, which a
            // non-`#` granted level rejects. Exception: a bare requested `#` has no parent (a
            // name has at least one level), so it means "one or more levels", exactly what
            // `+/#` matches.
            (Some(g), Some("#")) => {
                return was_first_level && g == "+" && granted_levels.next() == Some("#");
            }
            // `+` accepts any single level, whether requested has a literal or `+` there.
            (Some("+"), Some(_)) => {}
            // Equal literals (or `+` against `+`, caught above) agree. A literal granted level
            // against requested `+` fails: `+` can pick any other string.
            (Some(g), Some(r)) if g == r => {}
            (None, None) => return true,
            // Literal mismatch, or the two fix different numbers of levels.
            _ => return false,
        }
    }
}

/// Normalises a list of filters for storage: validates each (the first error wins, reported with
/// its index in the input), sorts (byte order), de-duplicates.
pub fn normalize_filters(
    filters: impl IntoIterator<Item = String>,
) -> Result<Vec<String>, (usize, TopicError)> {
    let mut out = Vec::new();
    for (index, filter) in filters.into_iter().enumerate() {
        validate_filter(&filter).map_err(|e| (index, e))?;
        out.push(filter);
    }
    // `String`'s `Ord` is byte-wise, so storage order does not depend on locale.
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

// The tables pin each function's answers case by case; the properties check `matches` and
// `covers` against a reference model written from the spec text.
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
