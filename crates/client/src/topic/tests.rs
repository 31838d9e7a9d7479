//! Table tests: each function's answers, case by case.

use super::*;

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
