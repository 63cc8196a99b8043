//! The sending side of one replication session (one peer, one database) as a plain state
//! machine: what the subscriber asked for, which origins it gets (relay included), when it must
//! be told to take a full copy instead, and which transactions go into the next frame.
//!
//! Like the core, it is driven by typed inputs ([`Sender::step`] for the subscriber's frames,
//! [`Sender::poll`] when the session may send) and answers with [`Action`]s; everything it
//! needs to know about this node (policies, low watermarks, the version vector, the audit log)
//! comes through [`SenderEnv`], read-only. The session thread (`push::push_loop`) only moves
//! bytes: it decodes frames into inputs, performs the actions (frames out, confirmations,
//! statistics) and runs full copies. Unit tests and simulations drive it with an in-memory
//! environment.
//!
//! Must never: touch a socket, a channel or the store directly, read the clock (time comes
//! in as `now`), or send a subscriber its own origin or a gap in an origin's stream.

use super::link::LinkFacts;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Target size of one transactions frame; many small transactions share a frame, one flush.
pub(crate) const FRAME_TARGET: usize = 256 * 1024;
/// At most this many transactions per frame.
pub(crate) const FRAME_TXNS: usize = 2000;
/// How often a relaying session looks for origins that appeared in this node's log.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(100);

/// (origin, version) pairs as the wire carries them.
pub(crate) type Vector = Vec<(String, u64)>;

/// One logged transaction as the audit log holds it: its version and encoded operations.
pub(crate) type LogEntry = (u64, crate::store::Slice);

/// What a session reads of this node, for one database and one peer (besides [`LinkFacts`]).
pub(crate) trait SenderEnv: LinkFacts {
    /// Below this version this node's log of `origin` is incomplete (0: complete, or unknown).
    fn low_watermark(&mut self, origin: &str) -> u64;
    /// This node's version vector of the database (None: no such database here).
    fn vector(&mut self) -> Result<Option<Vector>, String>;
    /// The logged transactions of `origin` above `after`, oldest first (None: no such origin).
    #[allow(clippy::type_complexity)]
    fn log_after(
        &mut self,
        origin: &str,
        after: u64,
    ) -> Option<Box<dyn Iterator<Item = Result<LogEntry, String>> + '_>>;
}

/// What the subscriber sent, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    Subscribe {
        origins: Vector,
        relay: Option<Vec<String>>,
    },
    CopyRequest {
        table: String,
        key: Vec<u8>,
    },
    Ack {
        applied: Vector,
    },
}

/// What the session thread must do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// The peer has committed this node's writes up to `version` (a `replicatedConfirmation`
    /// may be released).
    Confirmed { version: u64 },
    /// The peer acknowledged these versions (statistics).
    Acked { applied: Vector },
    /// Stream a full copy from this table and key.
    StartCopy { table: String, key: Vec<u8> },
    /// Tell the peer these origins cannot be streamed from the versions it has.
    NeedCopy { origins: Vector },
    /// Send these transactions in one frame, in this order.
    Txns { batch: Vec<(String, LogEntry)> },
    /// A transaction is larger than a frame may be: say why and end the session.
    Fail { reason: String },
}

/// The result of one [`Sender::poll`]: what to do, and whether to poll again at once (more
/// may be ready) rather than wait for the peer, a commit or the tick.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Poll {
    pub actions: Vec<Action>,
    pub again: bool,
}

/// One sending session's state.
pub(crate) struct Sender {
    peer: String,
    db: String,
    max_frame: usize,
    /// Origin → the highest version the subscriber has (or this session sent).
    subs: BTreeMap<String, u64>,
    subscribed: bool,
    copy_request: Option<(String, Vec<u8>)>,
    /// Requested origins this node cannot stream (to be answered with NeedCopy).
    need_copy: Vector,
    /// The subscriber also wants every other origin this node holds, except these.
    relay: Option<BTreeSet<String>>,
    /// Origins added by relaying since the last `Subscribe` (each offered once).
    relayed: BTreeSet<String>,
    next_discovery: Option<Instant>,
}

impl Sender {
    pub(crate) fn new(peer: &str, db: &str, max_frame: usize) -> Sender {
        Sender {
            peer: peer.to_string(),
            db: db.to_string(),
            max_frame,
            subs: BTreeMap::new(),
            subscribed: false,
            copy_request: None,
            need_copy: Vec::new(),
            relay: None,
            relayed: BTreeSet::new(),
            next_discovery: None,
        }
    }

    /// The origins this session streams and the version each has reached.
    #[cfg(test)]
    pub(crate) fn subscription(&self) -> &BTreeMap<String, u64> {
        &self.subs
    }

    /// Takes in one frame of the subscriber's.
    pub(crate) fn step(
        &mut self,
        input: Input,
        now: Instant,
        env: &mut dyn SenderEnv,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Subscribe { origins, relay } => {
                // The subscriber's cursor of this node's origin is what it has committed of
                // our writes: a confirmation like an Ack (a write it got through a relay while
                // this link was down was never acked here).
                if let Some((_, v)) = origins.iter().find(|(o, _)| o == env.node_name()) {
                    out.push(Action::Confirmed { version: *v });
                }
                // A link that does not carry all of the database relays nothing, and only
                // origins this node holds a complete log of are relayed.
                let link_complete = env.link_complete();
                let origins: Vector = origins
                    .into_iter()
                    .filter(|(o, _)| {
                        o == env.node_name() || (link_complete && env.origin_complete(o))
                    })
                    .collect();
                let (servable, stale) = split_servable(env, origins);
                self.need_copy = stale;
                let mut next = BTreeMap::new();
                for (origin, version) in servable {
                    if origin == self.peer {
                        // Never send a node its own writes back.
                        continue;
                    }
                    let sent = self.subs.get(&origin).copied().unwrap_or(0);
                    next.insert(origin, version.max(sent));
                }
                self.subs = next;
                self.subscribed = true;
                self.relay = relay
                    .filter(|_| link_complete)
                    .map(|except| except.into_iter().collect());
                // A listed origin that needs a copy is answered once, by the NeedCopy above:
                // relay discovery must not offer it again as if the subscriber had not listed it
                // (it is not in the subscription, so it would look new).
                self.relayed = self.need_copy.iter().map(|(o, _)| o.clone()).collect();
                self.next_discovery = Some(now);
            }
            Input::CopyRequest { table, key } => self.copy_request = Some((table, key)),
            Input::Ack { applied } => {
                if let Some((_, v)) = applied.iter().find(|(o, _)| o == env.node_name()) {
                    out.push(Action::Confirmed { version: *v });
                }
                out.push(Action::Acked { applied });
            }
        }
        out
    }

    /// What the session may do now: a requested full copy first, then NeedCopy answers, then
    /// the next frame of transactions.
    pub(crate) fn poll(&mut self, now: Instant, env: &mut dyn SenderEnv) -> Poll {
        let mut poll = Poll::default();
        if let Some((table, key)) = self.copy_request.take() {
            poll.actions.push(Action::StartCopy { table, key });
            poll.again = true;
            return poll;
        }
        if self.subscribed {
            self.discover_relayed(now, env);
        }
        if !self.need_copy.is_empty() {
            let origins = std::mem::take(&mut self.need_copy);
            log::info!(
                "{} needs a full copy of {}: {origins:?} predate the retained log",
                self.peer,
                self.db
            );
            poll.actions.push(Action::NeedCopy { origins });
        }
        if self.subscribed {
            match self.next_batch(env) {
                Ok((batch, again)) => {
                    poll.again = again;
                    if !batch.is_empty() {
                        poll.actions.push(Action::Txns { batch });
                    }
                }
                Err(reason) => poll.actions.push(Action::Fail { reason }),
            }
        }
        poll
    }

    /// Adds to a relaying subscription the origins this node holds that the subscriber
    /// neither listed nor excluded, from the start of this node's log: the subscriber listed
    /// every origin it holds, so it has none of these. One whose log here does not reach back
    /// to the start is answered with NeedCopy: streaming what is left would leave a gap the
    /// subscriber's cursor skips forever. Never the subscriber's own origin, nor one this
    /// node does not hold completely.
    fn discover_relayed(&mut self, now: Instant, env: &mut dyn SenderEnv) {
        let Some(except) = &self.relay else {
            return;
        };
        if self.next_discovery.is_some_and(|t| now < t) {
            return;
        }
        self.next_discovery = Some(now + DISCOVERY_INTERVAL);
        let vector = match env.vector() {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                log::warn!("cannot read the version vector of {}: {e}", self.db);
                return;
            }
        };
        let new: Vector = vector
            .into_iter()
            .filter(|(o, v)| {
                *v > 0
                    && *o != self.peer
                    && !except.contains(o)
                    && !self.subs.contains_key(o)
                    && !self.relayed.contains(o)
                    && env.origin_complete(o)
            })
            .map(|(o, _)| (o, 0))
            .collect();
        if new.is_empty() {
            return;
        }
        log::debug!("relaying {new:?} of {} to {}", self.db, self.peer);
        self.relayed.extend(new.iter().map(|(o, _)| o.clone()));
        let (servable, stale) = split_servable(env, new);
        self.need_copy.extend(stale);
        self.subs.extend(servable);
    }

    /// The next frame's transactions (empty: nothing to send) and whether to poll again at
    /// once. The subscription moves past what is returned.
    fn next_batch(
        &mut self,
        env: &mut dyn SenderEnv,
    ) -> Result<(Vec<(String, LogEntry)>, bool), String> {
        let budget = FRAME_TARGET.min(self.max_frame / 2);
        let mut batch: Vec<(String, LogEntry)> = Vec::new();
        let mut bytes = 0usize;
        let mut stale: Vector = Vec::new();
        for (origin, after) in &self.subs {
            let (first, bytes_before) = (batch.len(), bytes);
            let mut full = false;
            {
                let Some(log) = env.log_after(origin, *after) else {
                    continue;
                };
                for item in log {
                    let (version, ops) =
                        item.map_err(|e| format!("cannot read the audit log: {e}"))?;
                    let size = ops.len() + origin.len() + self.db.len() + 32;
                    if size + 64 > self.max_frame {
                        let reason = format!(
                            "transaction {version} of {origin} is {size} bytes, over replication.maxFrameSize ({}); the stream stops here until the limit is raised",
                            self.max_frame
                        );
                        log::error!("{reason}");
                        return Err(reason);
                    }
                    if !batch.is_empty() && (bytes + size > budget || batch.len() >= FRAME_TXNS) {
                        full = true;
                        break;
                    }
                    bytes += size;
                    batch.push((origin.clone(), (version, ops)));
                }
            }
            // Entries above what this session sent may have been removed since it subscribed
            // (delete_audit_logs_before, retention, a full copy this node received: each
            // raises the low watermark). Checked after reading, so a trim committed before the
            // read is always seen: streaming on would leave a hole the subscriber's cursor
            // skips forever, so that origin stops here and the subscriber is told to copy.
            if *after < env.low_watermark(origin) {
                batch.truncate(first);
                bytes = bytes_before;
                stale.push((origin.clone(), *after));
            }
            if full {
                break;
            }
        }
        let found_stale = !stale.is_empty();
        if found_stale {
            for (origin, _) in &stale {
                self.subs.remove(origin);
            }
            log::info!(
                "{}: the log of {stale:?} in {} was trimmed under a live stream; asking for a full copy",
                self.peer,
                self.db
            );
            self.need_copy.extend(stale);
        }
        for (origin, (version, _)) in &batch {
            if let Some(v) = self.subs.get_mut(origin) {
                *v = (*v).max(*version);
            }
        }
        // Go round again at once when there is a NeedCopy to send or more may be waiting.
        let again = found_stale || !batch.is_empty();
        Ok((batch, again))
    }
}

/// Splits origins into those this node can stream from the requested versions and those it
/// cannot (requested version below this node's low watermark for the origin).
fn split_servable(env: &mut dyn SenderEnv, origins: Vector) -> (Vector, Vector) {
    origins
        .into_iter()
        .partition(|(origin, version)| *version >= env.low_watermark(origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory node: per-origin logs, low watermarks, complete origins.
    struct Env {
        name: String,
        link_complete: bool,
        incomplete: BTreeSet<String>,
        logs: BTreeMap<String, Vec<u64>>,
        low: HashMap<String, u64>,
    }

    impl Env {
        fn new(name: &str) -> Env {
            Env {
                name: name.into(),
                link_complete: true,
                incomplete: BTreeSet::new(),
                logs: BTreeMap::new(),
                low: HashMap::new(),
            }
        }
        fn log(mut self, origin: &str, versions: &[u64]) -> Env {
            self.logs.insert(origin.into(), versions.to_vec());
            self
        }
    }

    impl LinkFacts for Env {
        fn node_name(&self) -> &str {
            &self.name
        }
        fn link_complete(&self) -> bool {
            self.link_complete
        }
        fn origin_complete(&self, origin: &str) -> bool {
            !self.incomplete.contains(origin)
        }
        fn version_ceiling(&self) -> u64 {
            u64::MAX
        }
    }

    impl SenderEnv for Env {
        fn low_watermark(&mut self, origin: &str) -> u64 {
            self.low.get(origin).copied().unwrap_or(0)
        }
        fn vector(&mut self) -> Result<Option<Vector>, String> {
            Ok(Some(
                self.logs
                    .iter()
                    .map(|(o, v)| (o.clone(), v.last().copied().unwrap_or(0)))
                    .collect(),
            ))
        }
        fn log_after(
            &mut self,
            origin: &str,
            after: u64,
        ) -> Option<Box<dyn Iterator<Item = Result<LogEntry, String>> + '_>> {
            let log = self.logs.get(origin)?;
            Some(Box::new(
                log.iter()
                    .filter(move |v| **v > after)
                    .map(|v| Ok((*v, crate::store::Slice::from(vec![1u8; 10])))),
            ))
        }
    }

    fn sent(p: &Poll) -> Vec<(String, u64)> {
        p.actions
            .iter()
            .flat_map(|a| match a {
                Action::Txns { batch } => batch.iter().map(|(o, (v, _))| (o.clone(), *v)).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn subscribe(
        s: &mut Sender,
        env: &mut Env,
        origins: &[(&str, u64)],
        relay: Option<Vec<String>>,
    ) -> Vec<Action> {
        let origins = origins.iter().map(|(o, v)| (o.to_string(), *v)).collect();
        s.step(Input::Subscribe { origins, relay }, Instant::now(), env)
    }

    #[test]
    fn a_subscriber_gets_what_it_lacks_in_order_and_never_its_own_writes() {
        let mut env = Env::new("a")
            .log("a", &[10, 20, 30])
            .log("b", &[5, 6])
            .log("c", &[7]);
        let mut s = Sender::new("b", "dev", 1 << 20);
        assert_eq!(
            s.poll(Instant::now(), &mut env),
            Poll::default(),
            "nothing before Subscribe"
        );
        let acts = subscribe(&mut s, &mut env, &[("a", 10), ("b", 0), ("c", 0)], None);
        assert_eq!(acts, vec![Action::Confirmed { version: 10 }]);
        let p = s.poll(Instant::now(), &mut env);
        assert_eq!(
            sent(&p),
            vec![("a".into(), 20), ("a".into(), 30), ("c".into(), 7)]
        );
        assert!(p.again);
        assert_eq!(s.poll(Instant::now(), &mut env), Poll::default());
        // A new subscription never rewinds what this session sent.
        subscribe(&mut s, &mut env, &[("a", 10), ("c", 0)], None);
        env.logs.get_mut("a").unwrap().push(40);
        assert_eq!(
            sent(&s.poll(Instant::now(), &mut env)),
            vec![("a".into(), 40)]
        );
    }

    #[test]
    fn origins_below_the_low_watermark_get_need_copy_at_subscribe_and_when_trimmed_under_a_stream()
    {
        let mut env = Env::new("a").log("a", &[10, 20, 30]).log("c", &[3, 9]);
        env.low.insert("a".into(), 15);
        let mut s = Sender::new("b", "dev", 1 << 20);
        subscribe(&mut s, &mut env, &[("a", 10), ("c", 0)], None);
        let p = s.poll(Instant::now(), &mut env);
        assert_eq!(
            p.actions[0],
            Action::NeedCopy {
                origins: vec![("a".into(), 10)]
            }
        );
        assert_eq!(sent(&p), vec![("c".into(), 3), ("c".into(), 9)]);
        // c's log is trimmed past what was sent: the stream of c stops, NeedCopy follows.
        env.logs.get_mut("c").unwrap().push(12);
        env.low.insert("c".into(), 11);
        let p = s.poll(Instant::now(), &mut env);
        assert!(sent(&p).is_empty() && p.again, "{p:?}");
        let p = s.poll(Instant::now(), &mut env);
        assert_eq!(
            p.actions,
            vec![Action::NeedCopy {
                origins: vec![("c".into(), 9)]
            }]
        );
        assert!(!s.subscription().contains_key("c"));
    }

    #[test]
    fn a_listed_origin_that_needs_a_copy_is_named_once_not_again_by_relay_discovery() {
        let mut env = Env::new("a").log("a", &[10, 20]).log("x", &[4]);
        env.low.insert("a".into(), 15);
        let mut s = Sender::new("b", "dev", 1 << 20);
        subscribe(&mut s, &mut env, &[("a", 10)], Some(Vec::new()));
        let p = s.poll(Instant::now(), &mut env);
        assert_eq!(
            p.actions[0],
            Action::NeedCopy {
                origins: vec![("a".into(), 10)]
            }
        );
        assert_eq!(sent(&p), vec![("x".into(), 4)]);
        let later = Instant::now() + Duration::from_secs(1);
        assert!(!s
            .poll(later, &mut env)
            .actions
            .iter()
            .any(|a| matches!(a, Action::NeedCopy { .. })));
    }

    #[test]
    fn relay_adds_origins_the_subscriber_lacks_only_on_a_complete_link_and_never_excluded_ones() {
        let mut env = Env::new("a")
            .log("a", &[1])
            .log("x", &[4, 5])
            .log("y", &[6])
            .log("z", &[7]);
        env.incomplete.insert("z".into());
        let mut s = Sender::new("b", "dev", 1 << 20);
        subscribe(&mut s, &mut env, &[("a", 0)], Some(vec!["y".into()]));
        let p = s.poll(Instant::now(), &mut env);
        assert_eq!(
            sent(&p),
            vec![("a".into(), 1), ("x".into(), 4), ("x".into(), 5)]
        );
        // The same subscription on a link that does not carry all of dev: own origin only.
        env.link_complete = false;
        let mut s = Sender::new("b", "dev", 1 << 20);
        subscribe(&mut s, &mut env, &[("a", 0), ("x", 0)], Some(Vec::new()));
        assert_eq!(
            sent(&s.poll(Instant::now(), &mut env)),
            vec![("a".into(), 1)]
        );
    }

    #[test]
    fn frames_are_bounded_and_an_oversized_transaction_fails_the_session() {
        let versions: Vec<u64> = (1..=5000).collect();
        let mut env = Env::new("a").log("a", &versions);
        let mut s = Sender::new("b", "dev", 1 << 20);
        subscribe(&mut s, &mut env, &[("a", 0)], None);
        let first = sent(&s.poll(Instant::now(), &mut env));
        assert_eq!(first.len(), FRAME_TXNS);
        assert_eq!(
            sent(&s.poll(Instant::now(), &mut env))[0].1,
            FRAME_TXNS as u64 + 1
        );
        let mut s = Sender::new("b", "dev", 60);
        subscribe(&mut s, &mut env, &[("a", 0)], None);
        let p = s.poll(Instant::now(), &mut env);
        assert!(matches!(&p.actions[..], [Action::Fail { .. }]), "{p:?}");
    }

    #[test]
    fn acks_confirm_this_nodes_writes_and_a_copy_request_comes_first() {
        let mut env = Env::new("a").log("a", &[1]);
        let mut s = Sender::new("b", "dev", 1 << 20);
        let applied = vec![("a".to_string(), 7), ("c".to_string(), 3)];
        assert_eq!(
            s.step(
                Input::Ack {
                    applied: applied.clone()
                },
                Instant::now(),
                &mut env
            ),
            vec![Action::Confirmed { version: 7 }, Action::Acked { applied }]
        );
        subscribe(&mut s, &mut env, &[("a", 0)], None);
        s.step(
            Input::CopyRequest {
                table: "dog".into(),
                key: vec![1],
            },
            Instant::now(),
            &mut env,
        );
        let p = s.poll(Instant::now(), &mut env);
        assert_eq!(
            p.actions,
            vec![Action::StartCopy {
                table: "dog".into(),
                key: vec![1]
            }]
        );
        assert_eq!(
            sent(&s.poll(Instant::now(), &mut env)),
            vec![("a".into(), 1)]
        );
    }
}
