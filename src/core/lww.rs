//! Last-writer-wins: the one rule that decides whether a write replaces what is stored.
//!
//! A write is identified by `(version, origin node name)`. Incoming beats stored iff its version
//! is greater, or the versions are equal and its origin name is greater (Harper's tie-break). The
//! same `(version, origin)` is the same write arriving twice (a relay or a resumed stream): a
//! duplicate, skipped. Deletes are ordinary writes (tombstones), so a stale put never resurrects a
//! deleted key and a strictly newer put recreates it.

/// What to do with an incoming write against the stored entry for the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The incoming write wins: store it.
    Apply,
    /// The stored entry is newer (or wins the tie-break): keep it.
    Stale,
    /// The very same write is already stored.
    Duplicate,
}

/// Decides `incoming` against `existing` (`None` = key never seen on this node).
pub fn decide(incoming: (u64, &str), existing: Option<(u64, &str)>) -> Decision {
    let Some((ev, eo)) = existing else {
        return Decision::Apply;
    };
    let (iv, io) = incoming;
    match iv.cmp(&ev) {
        std::cmp::Ordering::Greater => Decision::Apply,
        std::cmp::Ordering::Less => Decision::Stale,
        std::cmp::Ordering::Equal => match io.cmp(eo) {
            std::cmp::Ordering::Greater => Decision::Apply,
            std::cmp::Ordering::Less => Decision::Stale,
            std::cmp::Ordering::Equal => Decision::Duplicate,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    /// One rule: (incoming version, incoming origin, stored version/origin, expected, why).
    type Case = (
        u64,
        &'static str,
        Option<(u64, &'static str)>,
        Decision,
        &'static str,
    );

    /// The rule table.
    const CASES: &[Case] = &[
        (5, "a", None, Apply, "key never seen"),
        (
            6,
            "a",
            Some((5, "b")),
            Apply,
            "newer version wins whatever the names",
        ),
        (
            4,
            "z",
            Some((5, "a")),
            Stale,
            "older version loses whatever the names",
        ),
        (
            5,
            "b",
            Some((5, "a")),
            Apply,
            "tie: greater origin name wins",
        ),
        (
            5,
            "a",
            Some((5, "b")),
            Stale,
            "tie: smaller origin name loses",
        ),
        (
            5,
            "a",
            Some((5, "a")),
            Duplicate,
            "same write twice is skipped",
        ),
        (
            5,
            "127.0.0.10",
            Some((5, "127.0.0.9")),
            Stale,
            "names compare as strings",
        ),
    ];

    #[test]
    fn lww_rule_table() {
        for &(iv, io, existing, want, why) in CASES {
            assert_eq!(decide((iv, io), existing), want, "{why}");
        }
    }

    #[test]
    fn decision_is_antisymmetric_so_all_nodes_pick_the_same_winner() {
        let writes = [(1, "a"), (1, "b"), (2, "a"), (2, "c"), (3, "b")];
        for &x in &writes {
            for &y in &writes {
                let xy = decide(x, Some(y));
                let yx = decide(y, Some(x));
                match (xy, yx) {
                    (Apply, Stale) | (Stale, Apply) | (Duplicate, Duplicate) => {}
                    other => panic!("{x:?} vs {y:?}: {other:?}"),
                }
            }
        }
    }
}
