//! Redis as the cluster sees it: where it is (`url`), one connection and
//! its handshake (`conn`), and RESP2 framing (`resp`). No task of its own:
//! `cluster::link` drives the connections on the hub's executor.
//! `slots`: Redis Cluster's hash slots, shard map and redirections.

pub mod conn;
pub mod resp;
pub mod slots;
pub mod url;
