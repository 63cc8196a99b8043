//! Hybrid logical clock: the version of every committed transaction.
//!
//! A version is `physical_ms << 12 | counter`. It never goes backwards: not when the wall clock
//! steps back (NTP), not across restarts (the floor is persisted with every batch that issues a
//! version), and receiving a remote version moves the clock past it, so a write made after seeing
//! another node's write always wins LWW against it (the Harper failure this prevents:
//! HarperFast/harper#2629, a clock rollback that let resume skip writes).

/// Bits of the logical counter below the millisecond part. 12 bits (4,096 versions per
/// millisecond; beyond that the clock runs a little ahead) keep `ms + counter/4096` exact in an
/// f64 for the next centuries (41 bits of milliseconds + 12 = 53 = the f64 mantissa), so every
/// transaction's `txn_time` is distinct and ordered like its version.
pub const COUNTER_BITS: u32 = 12;

/// A version as Harper reports times: float milliseconds, the counter as an exact binary
/// fraction (`txn_time`, `__updatedtime__`).
pub fn to_ms_f64(version: u64) -> f64 {
    let ms = (version >> COUNTER_BITS) as f64;
    let frac = (version & ((1 << COUNTER_BITS) - 1)) as f64 / (1u64 << COUNTER_BITS) as f64;
    ms + frac
}

/// The version a [`to_ms_f64`] value stands for (exact: the counter is a binary fraction).
pub fn from_ms_f64(ms: f64) -> u64 {
    (ms * (1u64 << COUNTER_BITS) as f64) as u64
}

/// The smallest version at or after epoch milliseconds `ms`.
pub fn from_ms(ms: u64) -> u64 {
    ms << COUNTER_BITS
}

/// The millisecond part of a version.
pub fn ms_of(version: u64) -> u64 {
    version >> COUNTER_BITS
}

#[derive(Debug, Clone)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// A clock that will never issue a version at or below `floor`.
    pub fn new(floor: u64) -> Self {
        Hlc { last: floor }
    }

    /// The next version for a local transaction at wall-clock time `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> u64 {
        let physical = from_ms(now_ms);
        // Saturating: versions this close to the end of u64 cannot come from peers (their
        // versions are checked against the clock on arrival) and would freeze at the top rather
        // than wrap to zero and lose every later write.
        self.last = if physical > self.last {
            physical
        } else {
            self.last.saturating_add(1)
        };
        self.last
    }

    /// Records a version received from another node, so later local versions exceed it.
    pub fn observe(&mut self, remote: u64) {
        if remote > self.last {
            self.last = remote;
        }
    }

    /// The highest version issued or observed: the floor to persist.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_when_wall_clock_stalls_or_steps_back() {
        let mut c = Hlc::new(0);
        let a = c.next(1000);
        let b = c.next(1000);
        let d = c.next(900); // clock stepped back
        assert!(a < b && b < d);
        assert_eq!(ms_of(a), 1000);
        let e = c.next(2000);
        assert_eq!(e, from_ms(2000));
    }

    #[test]
    fn restart_with_persisted_floor_never_reissues_a_version() {
        let mut c = Hlc::new(0);
        let before = c.next(5000);
        // Restart on a machine whose clock is now behind the last issued version.
        let mut after = Hlc::new(c.last());
        assert!(after.next(4000) > before);
    }

    #[test]
    fn observing_a_remote_version_moves_local_versions_past_it() {
        let mut c = Hlc::new(0);
        c.observe(from_ms(10_000) + 5);
        assert!(c.next(1000) > from_ms(10_000) + 5);
        c.observe(1); // older remote versions change nothing
        assert!(c.next(1000) > from_ms(10_000) + 5);
    }

    #[test]
    fn ms_float_is_exact_so_distinct_versions_print_distinct_times() {
        let base = from_ms(1_795_713_020_913);
        let times: Vec<f64> = (0..4096).map(|c| to_ms_f64(base + c)).collect();
        for w in times.windows(2) {
            assert!(w[0] < w[1]);
        }
        assert_eq!(from_ms(to_ms_f64(base + 7).floor() as u64), base);
    }

    #[test]
    fn the_clock_never_wraps_to_zero() {
        let mut c = Hlc::new(u64::MAX - 1);
        assert_eq!(c.next(1000), u64::MAX);
        assert_eq!(c.next(1000), u64::MAX);
    }

    #[test]
    fn ms_float_keeps_order_and_millisecond_value() {
        let v = from_ms(1_795_713_020_913) + 3;
        let f = to_ms_f64(v);
        assert!((1_795_713_020_913.0..1_795_713_020_914.0).contains(&f));
        assert!(to_ms_f64(v + 1) >= f);
    }

    #[test]
    fn a_txn_time_maps_back_to_its_exact_version() {
        // A confirmation wait compares peers' acks with the version read back from txn_time:
        // one counter step off would wait for the wrong transaction.
        let base = from_ms(1_795_713_020_913);
        for v in (base..base + 4096).chain([base + (1 << 12) * 1000 + 4095]) {
            assert_eq!(from_ms_f64(to_ms_f64(v)), v);
        }
    }
}
