//! The heartbeat worker: this node's beat (`cluster::Node::beat`: renew its record, reap the
//! dead), at the heartbeat interval or sooner when another node's record is about to expire.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::runner::Reporter;
use crate::cluster::Node;

/// Runs until `stop`; then the node leaves the cluster (its record goes at once, so its leases
/// and reservations need not wait for the timeout).
pub async fn run(node: Arc<Node>, stop: CancellationToken, reporter: Reporter) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(node.until_next_beat()) => {}
        }
        match node.beat().await {
            Ok(_) => reporter.pass(Ok(())),
            Err(e) => {
                tracing::error!(error = %e, "heartbeat failed");
                reporter.pass(Err(e.to_string()));
            }
        }
    }
    node.leave().await;
}
