//! The worker runner: every background worker of the gateway (the sweeper, the deleter, the
//! retries of objects stored unscanned) runs here under its name and reports each pass, so the
//! admin API (`GET /workers`) and `/health` show what each one is doing and when it last
//! succeeded. A new worker is one `spawn` line in `server::start`.
//!
//! Stopping is ordered in two stages: the workers spawned `last` (the deleter) are stopped only
//! after every other one has ended, so that what the last requests and sweeps freed is still
//! deleted once its commit is on disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What one worker is doing, as the admin API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkerState {
    /// `running` until its task ends, then `stopped`.
    pub state: &'static str,
    /// Passes done (a sweep, a batch of deletes, a round of scan retries).
    pub passes: u64,
    pub failed_passes: u64,
    pub last_pass_ms: Option<i64>,
    /// The error of the last pass, if it failed.
    pub last_error: Option<String>,
    /// Another node holds this worker's lease: this one waits, passing nothing.
    pub standby: bool,
}

/// The state of every worker, shared with the admin API.
#[derive(Clone, Default)]
pub struct Board(Arc<Mutex<BTreeMap<&'static str, WorkerState>>>);

impl Board {
    pub fn snapshot(&self) -> BTreeMap<&'static str, WorkerState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, name: &'static str, f: impl FnOnce(&mut WorkerState)) {
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(b.entry(name).or_default());
    }
}

/// A worker's handle on its entry of the board.
pub struct Reporter {
    name: &'static str,
    board: Board,
}

impl Reporter {
    /// Records one pass and how it ended.
    pub fn pass(&self, result: Result<(), String>) {
        self.board.update(self.name, |s| {
            s.standby = false;
            s.passes += 1;
            s.last_pass_ms = Some(crate::meta::now_ms());
            match result {
                Ok(()) => s.last_error = None,
                Err(e) => {
                    s.failed_passes += 1;
                    s.last_error = Some(e);
                }
            }
        });
    }
}

impl Reporter {
    /// Records that another node holds the worker's lease: no pass was due here.
    pub fn standby(&self) {
        self.board.update(self.name, |s| s.standby = true);
    }
}

/// The running workers, in their two stop stages.
pub struct Runner {
    board: Board,
    first: (CancellationToken, JoinSet<()>),
    last: (CancellationToken, JoinSet<()>),
}

impl Default for Runner {
    fn default() -> Self {
        Self {
            board: Board::default(),
            first: (CancellationToken::new(), JoinSet::new()),
            last: (CancellationToken::new(), JoinSet::new()),
        }
    }
}

impl Runner {
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// Runs `worker(stop, reporter)` under `name`; with `last`, it is stopped only after every
    /// other worker ended.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, last: bool, worker: F)
    where
        F: FnOnce(CancellationToken, Reporter) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, set) = if last {
            (&self.last.0, &mut self.last.1)
        } else {
            (&self.first.0, &mut self.first.1)
        };
        self.board.update(name, |s| s.state = "running");
        let reporter = Reporter {
            name,
            board: self.board.clone(),
        };
        let run = worker(stop.clone(), reporter);
        let board = self.board.clone();
        set.spawn(async move {
            run.await;
            board.update(name, |s| s.state = "stopped");
        });
    }

    /// Stops the workers, the `last` ones after the others, and waits for them.
    pub async fn shutdown(mut self) {
        self.first.0.cancel();
        while self.first.1.join_next().await.is_some() {}
        self.last.0.cancel();
        while self.last.1.join_next().await.is_some() {}
    }
}

/// A leased worker's loop step: waits `every`, then takes or renews the worker's lease on
/// `node`. True when this node is to run the pass now; false once `stop` is cancelled. While
/// another node holds the lease, the worker reports standby and waits again.
pub async fn next_pass(
    node: &crate::cluster::Node,
    name: &str,
    every: std::time::Duration,
    stop: &CancellationToken,
    reporter: &Reporter,
) -> bool {
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(every) => {}
        }
        match node.lease(name, every).await {
            Ok(true) => return true,
            Ok(false) => reporter.standby(),
            Err(e) => reporter.pass(Err(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_report_passes_and_stop_in_two_stages() {
        let mut runner = Runner::default();
        let board = runner.board();
        let order = Arc::new(Mutex::new(Vec::new()));
        for (name, last) in [("deleter", true), ("sweeper", false)] {
            let order = order.clone();
            runner.spawn(name, last, move |stop, reporter| async move {
                reporter.pass(Ok(()));
                reporter.pass(Err("backend down".into()));
                stop.cancelled().await;
                order.lock().unwrap().push(name);
            });
        }
        runner.shutdown().await;
        assert_eq!(*order.lock().unwrap(), ["sweeper", "deleter"]);
        let s = board.snapshot();
        assert_eq!(s["sweeper"].passes, 2);
        assert_eq!(s["sweeper"].failed_passes, 1);
        assert_eq!(s["sweeper"].last_error.as_deref(), Some("backend down"));
        assert_eq!(s["deleter"].state, "stopped");
    }
}
