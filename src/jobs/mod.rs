//! The background work of the gateway, one module per worker, above everything they use: the
//! runner that names, stops and reports them and runs leased passes (`runner`), the node's
//! heartbeat (`heartbeat`), the sweeper of what interrupted work left behind (`sweeper`), the
//! deleter of freed blobs (`deleter`), and the scan retries and rescans (`scan`). Nothing below
//! imports this folder.

pub mod deleter;
pub mod heartbeat;
pub mod runner;
pub mod scan;
pub mod sweeper;
