//! What the session state machines (`sender`, `receiver`, `copy_send`, `copy_recv`) read of this
//! node, for one peer and one database: [`LinkFacts`] is what all of them ask, and one view,
//! [`LinkView`], answers every one of their environment traits from this node's store, link
//! policies and configuration (the impls live beside their sessions' threads, in `push.rs` and
//! `pull.rs`). Read-only: it never writes and never touches a socket.

use super::ReplCtx;
use std::collections::HashMap;

/// What every session asks about its link.
pub(crate) trait LinkFacts {
    /// This node's name (its own origin).
    fn node_name(&self) -> &str;
    /// The link to the peer carries all of the database (only then does anything but the two
    /// ends' own writes cross it, by relay or in a copy).
    fn link_complete(&self) -> bool;
    /// This node replicates all of the database with `origin` (holds its log completely).
    fn origin_complete(&self, origin: &str) -> bool;
    /// The highest version a peer may send (this node's clock plus the allowed skew).
    fn version_ceiling(&self) -> u64;
}

/// This node, seen from one link (peer, database).
pub(crate) struct LinkView<'a> {
    pub(crate) ctx: &'a ReplCtx,
    pub(crate) peer: &'a str,
    pub(crate) db: &'a str,
    /// Origin ids by name (read from the store again when one is missing).
    ids: HashMap<String, u32>,
}

impl<'a> LinkView<'a> {
    pub(crate) fn new(ctx: &'a ReplCtx, peer: &'a str, db: &'a str) -> LinkView<'a> {
        LinkView {
            ctx,
            peer,
            db,
            ids: HashMap::new(),
        }
    }

    /// The store's id of an origin name.
    pub(crate) fn origin_id(&mut self, origin: &str) -> Option<u32> {
        if !self.ids.contains_key(origin) {
            if let Ok(names) = self.ctx.store.origin_names() {
                self.ids = names.into_iter().map(|(id, name)| (name, id)).collect();
            }
        }
        self.ids.get(origin).copied()
    }
}

impl LinkFacts for LinkView<'_> {
    fn node_name(&self) -> &str {
        &self.ctx.node_name
    }
    fn link_complete(&self) -> bool {
        self.ctx.policy(self.peer).complete_for(self.db)
    }
    fn origin_complete(&self, origin: &str) -> bool {
        self.ctx.policy(origin).complete_for(self.db)
    }
    fn version_ceiling(&self) -> u64 {
        self.ctx.cfg.version_ceiling()
    }
}
