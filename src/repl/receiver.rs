//! The receiving side of one replication session (one peer, one database) as a plain state
//! machine: the subscription it sends, which received transactions it keeps, how batches go to
//! the core (at most [`PIPELINE_DEPTH`] in flight, acknowledged in commit order), that every
//! frame of another kind waits until the data before it is committed, and how a NeedCopy is
//! answered (a new subscription when this node's cursors moved past it, a full copy otherwise).
//!
//! Driven by typed inputs ([`Receiver::step`]: frames, commits, control) and answering
//! [`Action`]s; what it reads of the node (cursors, policies, limits) comes through
//! [`ReceiverEnv`]. The session thread (`pull::session_loop`) moves bytes, hands batches to the
//! core, runs full copies and reads frames only while [`Receiver::wants_frames`] (the
//! back-pressure: a link never holds more than a pipeline and one gathered batch).
//!
//! Must never: acknowledge what is not committed, let a non-data frame overtake the data
//! before it, or keep a transaction of an origin this stream did not ask for.

use super::link::LinkFacts;
use super::topology::Carry;
use super::wire::Frame;
use crate::core::txn::Txn;
use std::collections::VecDeque;

/// How many streamed batches a link has handed to the core and not yet seen committed. Two:
/// the next frames are read, decoded, validated and queued while the core commits the
/// previous batch (one batch in flight left the core idle for that time, catch-up ran at
/// about a third of the store's ceiling), and the core's group commit still syncs whatever is
/// queued in one fsync. More would only queue; the bound keeps a link's memory at a few
/// batches.
pub(crate) const PIPELINE_DEPTH: usize = 2;

/// (origin, version) pairs as the wire carries them.
pub(crate) type Vector = Vec<(String, u64)>;

/// What a session reads of this node, for one database and one peer (besides
/// [`LinkFacts`]; the link's completeness is not asked: the origins it carries say it).
pub(crate) trait ReceiverEnv: LinkFacts {
    /// This node's committed cursors for the origins `carry` asks for (`pull::cursors`).
    fn cursors(&mut self, carry: &Carry) -> Vector;
    /// The tables of the peer's own transactions this node receives (None: all).
    fn receive_filter(&self) -> Option<Vec<String>>;
    /// What this node's link policies keep of a validated batch.
    fn accept(&self, txns: Vec<Txn>) -> Vec<Txn>;
}

/// What arrived for the session.
#[derive(Debug)]
pub(crate) enum Input {
    /// Decoded frames, in order (the thread gathers what arrived while the core committed).
    Frames(Vec<Frame>),
    /// The oldest batch in flight is committed; `applied` is what it covered per origin.
    Committed { applied: Vector },
    /// The manager changed which origins this link carries.
    SetOrigins(Carry),
    /// A full copy asked for by [`Action::Copy`] finished.
    CopyDone,
}

/// What the session thread must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Send a frame (a subscription or an acknowledgement).
    Send(Frame),
    /// Hand these transactions to the core; their commit comes back as [`Input::Committed`],
    /// in the order submitted.
    Submit(Vec<Txn>),
    /// Run a full copy from the peer (its log no longer reaches this node's cursors), then
    /// report [`Input::CopyDone`].
    Copy,
    /// The peer sent data that fails validation: disconnect.
    Invalid(String),
    /// The session ends.
    End(String),
}

/// Something received, waiting for its turn.
#[derive(Debug)]
enum Item {
    Frame(Frame),
    SetOrigins(Carry),
}

/// One receiving session's state.
pub(crate) struct Receiver {
    peer: String,
    db: String,
    carry: Carry,
    /// Batches handed to the core and not yet committed.
    in_flight: usize,
    /// Received items not yet taken in (waiting for the pipeline).
    held: VecDeque<Item>,
    /// Transactions of consecutive data frames, gathered into the next batch.
    batch: Vec<Txn>,
    /// A full copy is running: nothing else happens until it is done.
    copying: bool,
    ended: bool,
}

impl Receiver {
    /// A session carrying `carry`, and its first action: the subscription.
    pub(crate) fn start(
        peer: &str,
        db: &str,
        carry: Carry,
        env: &mut dyn ReceiverEnv,
    ) -> (Receiver, Vec<Action>) {
        let r = Receiver {
            peer: peer.to_string(),
            db: db.to_string(),
            carry,
            in_flight: 0,
            held: VecDeque::new(),
            batch: Vec::new(),
            copying: false,
            ended: false,
        };
        let sub = r.subscribe(env);
        (r, vec![sub])
    }

    /// The origins this session carries (a full copy may update them while it runs).
    pub(crate) fn carry_mut(&mut self) -> &mut Carry {
        &mut self.carry
    }

    /// Whether the thread should read more frames now: nothing is waiting to go to the core
    /// and no copy runs. While false, only commits and control come in.
    pub(crate) fn wants_frames(&self) -> bool {
        !self.ended && !self.copying && self.held.is_empty() && self.batch.is_empty()
    }

    fn subscribe(&self, env: &mut dyn ReceiverEnv) -> Action {
        Action::Send(Frame::Subscribe {
            origins: env.cursors(&self.carry),
            tables: env.receive_filter(),
            relay: self.carry.relay_except.clone(),
        })
    }

    /// Takes one input.
    pub(crate) fn step(&mut self, input: Input, env: &mut dyn ReceiverEnv) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Frames(frames) => self.held.extend(frames.into_iter().map(Item::Frame)),
            Input::Committed { applied } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                out.push(Action::Send(Frame::Ack { applied }));
            }
            Input::SetOrigins(carry) => self.held.push_back(Item::SetOrigins(carry)),
            Input::CopyDone => {
                self.copying = false;
                out.push(self.subscribe(env));
            }
        }
        self.pump(env, &mut out);
        out
    }

    /// Takes in what is held, as far as the pipeline allows.
    fn pump(&mut self, env: &mut dyn ReceiverEnv, out: &mut Vec<Action>) {
        while !self.ended && !self.copying {
            match self.held.front() {
                Some(Item::Frame(Frame::Txns { .. })) => {
                    let Some(Item::Frame(Frame::Txns { mut txns })) = self.held.pop_front() else {
                        break;
                    };
                    let dropped =
                        super::validate::keep_asked_for(&mut txns, &self.carry, env.node_name());
                    if dropped > 0 {
                        log::debug!(
                            "dropped {dropped} transactions from {} ({}) of origins this stream did not ask for",
                            self.peer,
                            self.db
                        );
                    }
                    if let Err(e) = super::validate::txns(&txns, &self.db, env.version_ceiling()) {
                        log::warn!(
                            "{} sent an invalid transaction batch for {}: {e}; disconnecting",
                            self.peer,
                            self.db
                        );
                        self.ended = true;
                        out.push(Action::Invalid(e));
                        return;
                    }
                    self.batch.extend(env.accept(txns));
                }
                Some(_) => {
                    // Whatever this is, it comes after the data before it: that data must be
                    // committed (and acknowledged) first.
                    if !self.submit(out) || self.in_flight > 0 {
                        return;
                    }
                    match self.held.pop_front() {
                        Some(Item::SetOrigins(carry)) => {
                            // The new subscription starts from cursors that include what was in
                            // flight.
                            self.carry = carry;
                            out.push(self.subscribe(env));
                        }
                        Some(Item::Frame(Frame::Error { reason })) => {
                            self.ended = true;
                            out.push(Action::End(format!("peer stopped the stream: {reason}")));
                            return;
                        }
                        Some(Item::Frame(Frame::NeedCopy { origins: stale })) => {
                            // A NeedCopy answering a subscription older than our last copy is
                            // moot: our cursors have moved past what it complains about. The
                            // sender stopped streaming those origins, though (it also says
                            // NeedCopy mid-stream when its log was trimmed under a live
                            // session), so subscribe again from where we are: it answers with
                            // the stream or, if our cursors are still short, another NeedCopy.
                            let now = env.cursors(&self.carry);
                            let moot = stale
                                .iter()
                                .all(|(o, v)| now.iter().any(|(n, c)| n == o && c > v));
                            if moot {
                                out.push(self.subscribe(env));
                            } else {
                                log::info!(
                                    "{} no longer has {stale:?} from our cursors in {}: full copy",
                                    self.peer,
                                    self.db
                                );
                                self.copying = true;
                                out.push(Action::Copy);
                                return;
                            }
                        }
                        Some(Item::Frame(_)) | None => {}
                    }
                }
                None => {
                    self.submit(out);
                    return;
                }
            }
        }
    }

    /// Hands the gathered batch to the core if the pipeline has room; false when it must wait.
    fn submit(&mut self, out: &mut Vec<Action>) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        if self.in_flight >= PIPELINE_DEPTH {
            return false;
        }
        self.in_flight += 1;
        out.push(Action::Submit(std::mem::take(&mut self.batch)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::txn::{Actor, TxnKind};

    struct Env {
        cursors: Vector,
    }

    impl LinkFacts for Env {
        fn node_name(&self) -> &str {
            "me"
        }
        fn link_complete(&self) -> bool {
            true
        }
        fn origin_complete(&self, _origin: &str) -> bool {
            true
        }
        fn version_ceiling(&self) -> u64 {
            1_000_000
        }
    }

    impl ReceiverEnv for Env {
        fn cursors(&mut self, carry: &Carry) -> Vector {
            carry
                .origins
                .iter()
                .map(|o| {
                    let v = self
                        .cursors
                        .iter()
                        .find(|(n, _)| n == o)
                        .map_or(0, |(_, v)| *v);
                    (o.clone(), v)
                })
                .collect()
        }
        fn receive_filter(&self) -> Option<Vec<String>> {
            None
        }
        fn accept(&self, txns: Vec<Txn>) -> Vec<Txn> {
            txns
        }
    }

    fn env() -> Env {
        Env {
            cursors: vec![("p".into(), 5)],
        }
    }

    fn carry() -> Carry {
        Carry {
            origins: vec!["p".into()],
            relay_except: None,
        }
    }

    fn txns(origin: &str, versions: &[u64]) -> Frame {
        Frame::Txns {
            txns: versions
                .iter()
                .map(|v| Txn {
                    origin: origin.into(),
                    version: *v,
                    db: "dev".into(),
                    actor: Actor::None,
                    kind: TxnKind::None,
                    ops: Vec::new(),
                })
                .collect(),
        }
    }

    fn submitted(actions: &[Action]) -> Vec<Vec<u64>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Submit(t) => Some(t.iter().map(|t| t.version).collect()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_session_subscribes_with_its_cursors_and_gathers_frames_into_one_batch() {
        let (mut r, first) = Receiver::start("p", "dev", carry(), &mut env());
        assert_eq!(
            first,
            vec![Action::Send(Frame::Subscribe {
                origins: vec![("p".into(), 5)],
                tables: None,
                relay: None
            })]
        );
        let a = r.step(
            Input::Frames(vec![txns("p", &[6, 7]), txns("p", &[8])]),
            &mut env(),
        );
        assert_eq!(submitted(&a), vec![vec![6, 7, 8]]);
        assert!(r.wants_frames());
    }

    #[test]
    fn at_most_two_batches_are_in_flight_and_acks_follow_commits() {
        let (mut r, _) = Receiver::start("p", "dev", carry(), &mut env());
        assert_eq!(
            submitted(&r.step(Input::Frames(vec![txns("p", &[6])]), &mut env())),
            vec![vec![6]]
        );
        assert_eq!(
            submitted(&r.step(Input::Frames(vec![txns("p", &[7])]), &mut env())),
            vec![vec![7]]
        );
        // The third batch waits, and so does the socket.
        assert!(submitted(&r.step(Input::Frames(vec![txns("p", &[8])]), &mut env())).is_empty());
        assert!(!r.wants_frames());
        let a = r.step(
            Input::Committed {
                applied: vec![("p".into(), 6)],
            },
            &mut env(),
        );
        assert_eq!(
            a[0],
            Action::Send(Frame::Ack {
                applied: vec![("p".into(), 6)]
            })
        );
        assert_eq!(submitted(&a), vec![vec![8]]);
        assert!(r.wants_frames());
    }

    #[test]
    fn a_need_copy_waits_for_the_data_before_it_and_copies_unless_the_cursors_moved_past() {
        let (mut r, _) = Receiver::start("p", "dev", carry(), &mut env());
        let stale = Frame::NeedCopy {
            origins: vec![("p".into(), 5)],
        };
        let a = r.step(
            Input::Frames(vec![txns("p", &[6]), stale.clone()]),
            &mut env(),
        );
        assert_eq!(submitted(&a), vec![vec![6]]);
        assert!(
            !a.contains(&Action::Copy),
            "the copy overtook the data before it"
        );
        // Committed: the cursor is now 6, past the 5 the NeedCopy complained about.
        let mut moved = Env {
            cursors: vec![("p".into(), 6)],
        };
        let a = r.step(
            Input::Committed {
                applied: vec![("p".into(), 6)],
            },
            &mut moved,
        );
        assert!(
            matches!(a.last(), Some(Action::Send(Frame::Subscribe { .. }))),
            "{a:?}"
        );
        // Still short: a full copy, then a new subscription, and nothing read meanwhile.
        let a = r.step(Input::Frames(vec![stale]), &mut env());
        assert_eq!(a, vec![Action::Copy]);
        assert!(!r.wants_frames());
        let a = r.step(Input::CopyDone, &mut env());
        assert!(
            matches!(&a[..], [Action::Send(Frame::Subscribe { .. })]),
            "{a:?}"
        );
    }

    #[test]
    fn new_origins_subscribe_after_the_pipeline_drains() {
        let (mut r, _) = Receiver::start("p", "dev", carry(), &mut env());
        r.step(Input::Frames(vec![txns("p", &[6])]), &mut env());
        let wider = Carry {
            origins: vec!["p".into(), "q".into()],
            relay_except: None,
        };
        assert!(r.step(Input::SetOrigins(wider), &mut env()).is_empty());
        let a = r.step(
            Input::Committed {
                applied: vec![("p".into(), 6)],
            },
            &mut env(),
        );
        let Some(Action::Send(Frame::Subscribe { origins, .. })) = a.last() else {
            panic!("{a:?}")
        };
        assert_eq!(origins.len(), 2);
    }

    #[test]
    fn unasked_origins_are_dropped_invalid_batches_and_errors_end_the_session() {
        let (mut r, _) = Receiver::start("p", "dev", carry(), &mut env());
        let a = r.step(
            Input::Frames(vec![txns("x", &[6]), txns("p", &[7])]),
            &mut env(),
        );
        assert_eq!(submitted(&a), vec![vec![7]]);
        let a = r.step(Input::Frames(vec![txns("p", &[u64::MAX])]), &mut env());
        assert!(matches!(&a[..], [Action::Invalid(_)]), "{a:?}");
        let (mut r, _) = Receiver::start("p", "dev", carry(), &mut env());
        let a = r.step(
            Input::Frames(vec![Frame::Error { reason: "x".into() }]),
            &mut env(),
        );
        assert_eq!(a, vec![Action::End("peer stopped the stream: x".into())]);
        assert!(!r.wants_frames());
    }
}
