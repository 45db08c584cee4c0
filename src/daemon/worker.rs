//! The registry worker: the one [`Registry`] connection, used off the
//! async runtime.
//!
//! SQLite calls block, so they never run on a runtime thread. Tasks send
//! closures to a queue; one task takes them in order and runs each on the
//! blocking pool (`spawn_blocking`), handing the connection along. A slow
//! or locked database therefore delays only the requests that need it,
//! never the socket server or a reader's I/O. Running each job as a
//! blocking task (rather than on a thread of our own) also tells tokio's
//! paused test clock that work is in progress, so in-process tests with
//! paused time do not jump ahead while the registry answers.

use tokio::sync::{mpsc, oneshot};

use crate::registry::Registry;

type Job = Box<dyn FnOnce(&mut Registry) + Send>;

/// Jobs queued before callers wait for a place.
const QUEUE: usize = 1024;

/// Handle to the worker. Cloneable.
#[derive(Clone, Debug)]
pub struct Worker {
    tx: mpsc::Sender<Job>,
}

/// The worker has stopped (a job panicked, or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("registry worker stopped")]
pub struct WorkerGone;

impl Worker {
    /// Starts the worker with `reg`. Must be called inside a tokio runtime.
    pub fn start(reg: Registry) -> Worker {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        // Jobs log with the caller's subscriber, blocking pool or not.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        tokio::spawn(async move {
            let mut reg = reg;
            while let Some(job) = rx.recv().await {
                let d = dispatch.clone();
                let ran = tokio::task::spawn_blocking(move || {
                    tracing::dispatcher::with_default(&d, || job(&mut reg));
                    reg
                })
                .await;
                match ran {
                    Ok(r) => reg = r,
                    Err(e) => {
                        tracing::error!(error = %e, "registry job failed; the registry worker stops");
                        return;
                    }
                }
            }
        });
        Worker { tx }
    }

    /// Runs `f` with the registry and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, WorkerGone>
    where
        T: Send + 'static,
        F: FnOnce(&mut Registry) -> T + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |reg| {
            let _ = done.send(f(reg));
        });
        self.tx.send(job).await.map_err(|_| WorkerGone)?;
        answer.await.map_err(|_| WorkerGone)
    }
}
