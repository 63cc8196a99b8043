//! Skerry: a small, fast, Harper-compatible database node.
//!
//! Layout by responsibility: `ops` (HTTP operations API: parse, authenticate, authorise, serve
//! reads), `core` (the single-threaded state machine that owns every write), `store` (fjall),
//! `repl` (peer sockets), `sql` (the `sql` operation), `tls` (certificates and trust), `obs` (metrics, status page),
//! `config`, `node` (wiring the threads together) and `util`.

pub mod config;
pub mod core;
pub mod node;
pub mod obs;
pub mod ops;
pub mod repl;
pub mod sql;
pub mod store;
pub mod tls;
pub mod util;
