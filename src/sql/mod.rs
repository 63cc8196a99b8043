//! Harper's `sql` operation: SQL text parsed once at the edge into a typed plan (`parse`),
//! evaluated per row (`eval`) and run over the same read path and core as the NoSQL
//! operations (`exec`); the plainest SELECTs are planned without sqlparser and recent SELECT
//! plans are kept (`fast`). Owns nothing persistent; never writes the store itself.

pub mod eval;
pub mod exec;
pub mod fast;
pub mod parse;
