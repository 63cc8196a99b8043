//! The operations API: HTTP listener, request parsing, authentication, authorisation, reads.
//!
//! Workers parse a request into a validated [`parse::Operation`], authenticate and authorise
//! it, then either serve it here (reads, from the store and the published catalog) or hand it
//! to the core thread and wait for the committed answer. Must never write to the store itself.

pub mod admin;
pub mod auth;
pub mod body;
pub mod certs;
pub mod fields;
pub mod http;
pub mod jobs;
pub mod parse;
pub mod query;
pub mod read;
