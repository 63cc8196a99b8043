//! Skerry: a small, fast, Harper-compatible database node.
//!
//! Layout by responsibility: `ops` (HTTP operations API: parse, authenticate, authorise, serve
//! reads), `sql` (the `sql` operation), `jobs` (background jobs: bulk loads, exports,
//! clean-ups), `core` (the single-threaded state machine that owns every write), `store`
//! (fjall), `repl` (peer sockets), `tls` (certificates and trust), `obs` (metrics, status
//! page), `config`, `node` (wiring the threads together) and `util`.

pub mod config;
pub mod core;
pub mod jobs;
pub mod node;
pub mod obs;
pub mod ops;
pub mod repl;
pub mod sql;
pub mod store;
pub mod tls;
pub mod util;
