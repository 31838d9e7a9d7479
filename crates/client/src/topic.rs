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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- table tests -----------------------------------------------------------------------

    #[test]
    fn validate_filter_table() {
        let long_ok = "a".repeat(MAX_TOPIC_LEN);
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("a", Ok(())),
            ("a/b/c", Ok(())),
            ("/", Ok(())),
            ("a//b", Ok(())),
            ("/a/", Ok(())),
            ("+", Ok(())),
            ("#", Ok(())),
            ("+/#", Ok(())),
            ("a/+/c/#", Ok(())),
            ("/+/", Ok(())),
            ("$SYS/#", Ok(())),
            ("ü/€/😀", Ok(())),
            (" ", Ok(())),
            (&long_ok, Ok(())),
            ("", Err(TopicError::Empty)),
            (&too_long, Err(TopicError::TooLong)),
            ("a\0b", Err(TopicError::ContainsNul)),
            ("\0", Err(TopicError::ContainsNul)),
            ("a+", Err(TopicError::MisplacedPlus)),
            ("+a", Err(TopicError::MisplacedPlus)),
            ("a/b+/c", Err(TopicError::MisplacedPlus)),
            ("++", Err(TopicError::MisplacedPlus)),
            ("a/#/b", Err(TopicError::MisplacedHash)),
            ("#/", Err(TopicError::MisplacedHash)),
            ("a#", Err(TopicError::MisplacedHash)),
            ("a/#b", Err(TopicError::MisplacedHash)),
            ("##", Err(TopicError::MisplacedHash)),
            ("#/#", Err(TopicError::MisplacedHash)),
            // A level with both wildcards reports the `+` problem first.
            ("+#", Err(TopicError::MisplacedPlus)),
        ];
        for (filter, want) in cases {
            assert_eq!(
                validate_filter(filter),
                *want,
                "filter {:?}",
                filter.get(..40)
            );
        }
    }

    #[test]
    fn validate_name_table() {
        let long_ok = "a/".repeat(MAX_TOPIC_LEN / 2) + "a";
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("a", Ok(())),
            ("a/b/c", Ok(())),
            ("/", Ok(())),
            ("a//b", Ok(())),
            ("$SYS/broker/uptime", Ok(())),
            ("ü/€", Ok(())),
            (&long_ok, Ok(())),
            ("", Err(TopicError::Empty)),
            (&too_long, Err(TopicError::TooLong)),
            ("a\0", Err(TopicError::ContainsNul)),
            ("+", Err(TopicError::WildcardInName)),
            ("#", Err(TopicError::WildcardInName)),
            ("a/+/b", Err(TopicError::WildcardInName)),
            ("a/b#", Err(TopicError::WildcardInName)),
            ("a+b", Err(TopicError::WildcardInName)),
            // NUL is reported before wildcards.
            ("+\0", Err(TopicError::ContainsNul)),
        ];
        for (name, want) in cases {
            assert_eq!(validate_name(name), *want, "name {:?}", name.get(..40));
        }
    }

    #[test]
    fn error_messages_are_human_readable() {
        assert_eq!(TopicError::Empty.to_string(), "topic must not be empty");
        assert!(TopicError::TooLong.to_string().contains("65535"));
        assert!(TopicError::MisplacedHash.to_string().contains("'#'"));
        assert!(TopicError::MisplacedPlus.to_string().contains("'+'"));
    }

    #[test]
    fn matches_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("a", "a", true),
            ("a", "b", false),
            ("a", "a/b", false),
            ("a/b", "a", false),
            ("a/b/c", "a/b/c", true),
            ("A", "a", false),
            // `+`: exactly one level, possibly empty.
            ("+", "a", true),
            ("+", "a/b", false),
            ("+", "/", false),
            ("+/+", "/", true),
            ("a/+/b", "a//b", true),
            ("a/+/b", "a/x/b", true),
            ("a/+/b", "a/x/y/b", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("/+", "/x", true),
            ("+/+/+", "a/b", false),
            // `#`: parent and any number of children.
            ("#", "a", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("a/#", "a", true),
            ("a/#", "a/", true),
            ("a/#", "a/b/c", true),
            ("a/#", "b", false),
            ("a/#", "ab", false),
            ("a/b/#", "a", false),
            ("a/b/#", "a/b", true),
            ("+/#", "a", true),
            ("+/#", "a/b", true),
            ("a/+/#", "a", false),
            ("a/+/#", "a/b", true),
            ("/#", "/", true),
            ("/#", "a", false),
            // `$` topics: leading wildcards never match them (MQTT 4.7.2).
            ("#", "$SYS", false),
            ("#", "$SYS/a", false),
            ("+/a", "$SYS/a", false),
            ("+", "$", false),
            ("+/#", "$SYS/a", false),
            ("$SYS/#", "$SYS/a", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/+", "$SYS/a", true),
            ("$SYS", "$SYS", true),
            // Only the first level counts: `$` later is an ordinary character.
            ("a/+", "a/$x", true),
            ("a/#", "a/$x/y", true),
            ("+", "a$", true),
        ];
        for (filter, name, want) in cases {
            assert_eq!(
                matches(filter, name),
                *want,
                "matches({filter:?}, {name:?})"
            );
        }
    }

    #[test]
    fn covers_table() {
        let cases: &[(&str, &str, bool)] = &[
            // Examples from the contract.
            ("a/#", "a/+/c", true),
            ("a/#", "a/#", true),
            ("a/#", "a", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/+/c", true),
            ("a/+/c", "a/#", false),
            ("a/b/c", "a/+/c", false),
            ("+/x", "+/x", true),
            ("#", "a", true),
            ("#", "+/a", true),
            ("#", "#", true),
            ("#", "a/b/#", true),
            ("#", "$SYS/#", false),
            ("#", "$SYS", false),
            ("+/#", "$SYS/a", false),
            ("+", "$SYS", false),
            ("$SYS/#", "$SYS/a", true),
            ("$SYS/#", "$SYS/#", true),
            ("$SYS/+", "$SYS/a", true),
            ("$SYS/+", "$SYS/#", false),
            ("$SYS/#", "$OTHER/#", false),
            ("+/a", "+/a", true),
            // Leading-wildcard requests can never match `$` topics, so a `$` grant can't cover
            // them, and a wildcard grant needs no `$` exception.
            ("$SYS/#", "#", false),
            ("$SYS/#", "+/a", false),
            // `#` in the request matches its parent level too.
            ("a/+/#", "a/#", false),
            ("a/+", "a/#", false),
            ("a", "a/#", false),
            ("+/#", "a/#", true),
            ("+/+/#", "a/#", false),
            ("a/#", "a/b/#", true),
            ("a/b/#", "a/#", false),
            // `/#` cannot match its parent, the (invalid) empty name.
            ("+/+/#", "/#", true),
            ("/+/#", "/#", true),
            ("/#", "/#", true),
            ("+/#", "/#", true),
            ("/+", "/#", false),
            ("/", "/#", false),
            // Bare `#` means "one or more levels": exactly `+/#`.
            ("+/#", "#", true),
            ("+", "#", false),
            ("+/+/#", "#", false),
            ("a/#", "#", false),
            // `+` in the grant.
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/", true),
            ("a/+", "a", false),
            ("a/+", "a/b/c", false),
            ("+/+", "a/+", true),
            ("+", "+/+", false),
            // `#` in the grant covers the parent and any tail.
            ("a/#", "a/b/c/d", true),
            ("a/#", "b/#", false),
            ("a/b/#", "a/b", true),
            ("a/b/#", "a", false),
            ("+/b/#", "a/b/+/#", true),
            ("+/b/#", "a/+/#", false),
            // Literals and empty levels.
            ("a", "a", true),
            ("a", "b", false),
            ("a", "+", false),
            ("/", "/", true),
            ("+/+", "/", true),
            ("a//b", "a/+/b", false),
            ("a/+/b", "a//b", true),
            ("/#", "/", true),
            ("/#", "+/#", false),
        ];
        for (granted, requested, want) in cases {
            assert_eq!(
                covers(granted, requested),
                *want,
                "covers({granted:?}, {requested:?})"
            );
        }
    }

    #[test]
    fn normalize_filters_table() {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(normalize_filters(Vec::new()), Ok(Vec::new()));
        assert_eq!(
            normalize_filters(owned(&["b/#", "a", "b/#", "A", "a/+", "a"])),
            Ok(owned(&["A", "a", "a/+", "b/#"]))
        );
        assert_eq!(
            normalize_filters(owned(&["a", "b#", "", "c"])),
            Err((1, TopicError::MisplacedHash))
        );
        assert_eq!(
            normalize_filters(owned(&["", "b#"])),
            Err((0, TopicError::Empty))
        );
    }

    /// Invalid inputs must still be answered without panicking.
    #[test]
    fn no_panic_on_odd_inputs() {
        for s in ["", "/", "//", "#", "#/#", "+#", "$", "$/", "\0", "a/#/b"] {
            for t in ["", "/", "//", "#", "#/#", "+#", "$", "$/", "\0", "a/#/b"] {
                let _ = matches(s, t);
                let _ = covers(s, t);
            }
        }
    }

    // ---- reference model -------------------------------------------------------------------

    /// Obviously-correct matcher over level slices, written straight from the spec text; the
    /// `$` rule is applied once by the caller because it only concerns the first level.
    fn ref_levels(filter: &[&str], name: &[&str]) -> bool {
        match (filter, name) {
            // `#` is always last and matches the rest, whatever its length (even zero).
            (["#"], _) => true,
            ([], []) => true,
            (["+", f_rest @ ..], [_, n_rest @ ..]) => ref_levels(f_rest, n_rest),
            ([f, f_rest @ ..], [n, n_rest @ ..]) => f == n && ref_levels(f_rest, n_rest),
            _ => false,
        }
    }

    fn ref_matches(filter: &str, name: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let n: Vec<&str> = name.split('/').collect();
        let leading_wildcard = matches!(f.first(), Some(&"+") | Some(&"#"));
        let dollar_name = n.first().is_some_and(|l| l.starts_with('$'));
        !(leading_wildcard && dollar_name) && ref_levels(&f, &n)
    }

    /// Name levels for exhaustive checks: two ordinary literals, a `$` literal and the empty
    /// level. Two ordinary literals suffice because a filter pins at most one literal per level,
    /// so the other is always a "fresh" value that a `+` can take and a literal rejects.
    const NAME_LEVELS: [&str; 4] = ["a", "b", "$s", ""];
    /// Levels for generated filters (`#` is placed separately, only last).
    const FILTER_LEVELS: [&str; 5] = ["a", "b", "$s", "", "+"];

    /// Every valid name of 1..=depth levels over `NAME_LEVELS` (the empty name is invalid).
    fn all_names(depth: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut layer: Vec<String> = vec![String::new()];
        for d in 1..=depth {
            layer = layer
                .iter()
                .flat_map(|prefix| {
                    NAME_LEVELS.iter().map(move |l| {
                        if d == 1 {
                            (*l).to_string()
                        } else {
                            format!("{prefix}/{l}")
                        }
                    })
                })
                .collect();
            out.extend(layer.iter().filter(|n| validate_name(n).is_ok()).cloned());
        }
        out
    }

    /// Every valid filter of 1..=depth levels (a trailing `#` counts as a level).
    fn all_filters(depth: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut prefixes: Vec<Vec<&str>> = vec![Vec::new()];
        for _ in 0..depth {
            for p in &prefixes {
                let mut with_hash = p.clone();
                with_hash.push("#");
                out.push(with_hash.join("/"));
            }
            prefixes = prefixes
                .iter()
                .flat_map(|p| {
                    FILTER_LEVELS.iter().map(move |l| {
                        let mut next = p.clone();
                        next.push(*l);
                        next
                    })
                })
                .collect();
            out.extend(prefixes.iter().map(|p| p.join("/")));
        }
        out.retain(|f| validate_filter(f).is_ok());
        out.sort();
        out.dedup();
        out
    }

    /// Covers by brute force: inclusion of match sets over an enumerated name space.
    fn brute_covers(granted: &str, requested: &str, names: &[String]) -> bool {
        names
            .iter()
            .all(|n| !matches(requested, n) || matches(granted, n))
    }

    /// Exhaustive version of the completeness/soundness property for filters up to 3 levels.
    /// Names up to 3 levels suffice: a counterexample needs at most one level more than the
    /// requested filter's fixed prefix, and a filter ending in `#` fixes at most 2 levels here.
    #[test]
    fn covers_equals_brute_force_exhaustively_up_to_depth_3() {
        let filters = all_filters(3);
        let names = all_names(3);
        assert!(names.len() <= 128);
        // One bit per name, so each pair is a single mask comparison.
        let sets: Vec<u128> = filters
            .iter()
            .map(|f| {
                names
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| matches(f, n))
                    .fold(0u128, |acc, (i, _)| acc | (1u128 << i))
            })
            .collect();
        let mut covered_pairs = 0;
        for (g, g_set) in filters.iter().zip(&sets) {
            for (r, r_set) in filters.iter().zip(&sets) {
                let brute = r_set & !g_set == 0;
                assert_eq!(covers(g, r), brute, "covers({g:?}, {r:?})");
                covered_pairs += usize::from(brute);
            }
        }
        // Guard against a vacuous run.
        assert!(covered_pairs > filters.len());
    }

    // ---- generators --------------------------------------------------------------------------

    /// A valid filter of 1..=4 levels, with `#` only as a trailing level.
    fn filter_strategy() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop::sample::select(&FILTER_LEVELS[..]), 0..=4),
            any::<bool>(),
        )
            .prop_map(|(mut levels, hash)| {
                if hash || levels.is_empty() {
                    levels.truncate(3);
                    levels.push("#");
                }
                levels.join("/")
            })
            .prop_filter("valid filter", |f| validate_filter(f).is_ok())
    }

    /// A valid name of 1..=6 levels, with one literal (`c`) that no filter uses.
    fn name_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(&["a", "b", "$s", "", "c"][..]), 1..=6)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid name", |n| validate_name(n).is_ok())
    }

    /// A name `filter` would match if not for the `$` rule: wildcards replaced with `picks`
    /// (`#` by 0..=2 levels). Random names rarely match, these usually do.
    fn instantiate(filter: &str, picks: &[&str], hash_len: usize) -> String {
        let mut picks = picks.iter().cycle();
        let mut levels: Vec<&str> = Vec::new();
        for level in filter.split('/') {
            match level {
                "+" => levels.push(picks.next().copied().unwrap_or("x")),
                "#" => {
                    for _ in 0..hash_len {
                        levels.push(picks.next().copied().unwrap_or("x"));
                    }
                }
                literal => levels.push(literal),
            }
        }
        if levels.is_empty() {
            levels.push(picks.next().copied().unwrap_or("x"));
        }
        levels.join("/")
    }

    fn picks_strategy() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(&NAME_LEVELS[..]), 1..=4)
    }

    /// A broader version of `filter`: some levels turned into `+`, possibly cut short with `#`.
    /// Feeding covers pairs like these makes `covers == true` common enough to test soundness.
    fn generalize(filter: &str, plus_mask: u8, cut: Option<usize>) -> String {
        let mut levels: Vec<&str> = filter
            .split('/')
            .enumerate()
            .map(|(i, l)| if plus_mask & (1 << i) != 0 { "+" } else { l })
            .collect();
        if let Some(cut) = cut {
            levels.truncate(cut);
            levels.push("#");
        }
        let g = levels.join("/");
        if validate_filter(&g).is_ok() {
            g
        } else {
            "#".to_string()
        }
    }

    /// (granted, requested) pairs: half independent, half related by `generalize`.
    fn pair_strategy() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            (filter_strategy(), filter_strategy()),
            (filter_strategy(), any::<u8>(), prop::option::of(0usize..4))
                .prop_map(|(r, mask, cut)| (generalize(&r, mask, cut), r)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// (1) `matches` agrees with the reference matcher.
        #[test]
        fn matches_agrees_with_reference(
            filter in filter_strategy(),
            name in name_strategy(),
            picks in picks_strategy(),
            hash_len in 0usize..=2,
        ) {
            prop_assert_eq!(matches(&filter, &name), ref_matches(&filter, &name));
            let close = instantiate(&filter, &picks, hash_len);
            prop_assume!(validate_name(&close).is_ok());
            prop_assert_eq!(matches(&filter, &close), ref_matches(&filter, &close));
        }

        /// (2) Soundness: whatever `requested` matches, a covering `granted` matches too.
        #[test]
        fn covers_is_sound(
            (granted, requested) in pair_strategy(),
            names in prop::collection::vec(name_strategy(), 0..16),
            picks in prop::collection::vec(picks_strategy(), 8),
        ) {
            prop_assume!(covers(&granted, &requested));
            let close = picks
                .iter()
                .enumerate()
                .map(|(i, p)| instantiate(&requested, p, i % 3));
            for name in names.into_iter().chain(close) {
                if validate_name(&name).is_ok() && matches(&requested, &name) {
                    prop_assert!(
                        matches(&granted, &name),
                        "covers({:?}, {:?}) but {:?} escapes", granted, requested, name
                    );
                }
            }
        }

        /// (3) Completeness: inclusion over all names up to depth 4 implies `covers`. This is
        /// exact for filters of at most 4 levels: a counterexample to inclusion never needs a
        /// literal outside {a, b} (a filter pins one literal per level, so the other is fresh),
        /// nor more than 4 levels (the requested filter fixes at most 3 levels before a `#`, or
        /// at most 4 without one). So the property is checked as an equality.
        #[test]
        fn covers_is_complete_on_small_alphabet((granted, requested) in pair_strategy()) {
            thread_local! {
                static NAMES: Vec<String> = all_names(4);
            }
            let brute = NAMES.with(|names| brute_covers(&granted, &requested, names));
            prop_assert_eq!(covers(&granted, &requested), brute);
        }

        /// (4) Every filter covers itself.
        #[test]
        fn covers_is_reflexive(filter in filter_strategy()) {
            prop_assert!(covers(&filter, &filter));
        }

        /// A filter covers every name it matches (a name is also a filter).
        #[test]
        fn filter_covers_its_instances(
            filter in filter_strategy(),
            picks in picks_strategy(),
            hash_len in 0usize..=2,
        ) {
            let name = instantiate(&filter, &picks, hash_len);
            prop_assume!(validate_name(&name).is_ok());
            prop_assert_eq!(covers(&filter, &name), matches(&filter, &name));
        }

        /// (5) Output of `normalize_filters` is sorted, unique and the same set as the input.
        #[test]
        fn normalize_is_sorted_unique(filters in prop::collection::vec(filter_strategy(), 0..12)) {
            let out = normalize_filters(filters.clone());
            prop_assert!(out.is_ok());
            let out = out.unwrap_or_default();
            prop_assert!(out.windows(2).all(|w| w[0] < w[1]));
            let mut expected = filters;
            expected.sort();
            expected.dedup();
            prop_assert_eq!(out, expected);
        }

        /// `normalize_filters` reports the first invalid filter by index.
        #[test]
        fn normalize_reports_first_error(
            filters in prop::collection::vec("[ab+#/\0]{0,4}", 0..8),
        ) {
            let first_bad = filters
                .iter()
                .enumerate()
                .find_map(|(i, f)| validate_filter(f).err().map(|e| (i, e)));
            match (normalize_filters(filters), first_bad) {
                (Err(got), Some(want)) => prop_assert_eq!(got, want),
                (Ok(_), None) => {}
                (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want),
            }
        }

        /// No input, valid or not, makes any function panic.
        #[test]
        fn never_panics(a in "[ab$+#/\0]{0,8}", b in "[ab$+#/\0]{0,8}", c in ".*") {
            let _ = validate_filter(&a);
            let _ = validate_name(&a);
            let _ = validate_filter(&c);
            let _ = matches(&a, &b);
            let _ = matches(&c, &a);
            let _ = covers(&a, &b);
            let _ = covers(&b, &c);
        }
    }
}
