//! `matches` and `covers` against a reference model written straight from the spec: exhaustively
//! for filters and names up to 3 levels, and by proptest beyond that, plus `normalize_filters`
//! and no panics on any input.

use proptest::prelude::*;

use super::*;

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
