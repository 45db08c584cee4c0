//! The registry worker: one OS thread owning the [`Registry`] connection.
//!
//! SQLite calls block, so they never run on the async runtime. Tasks send
//! closures to the worker and await the answer; a slow or locked database
//! therefore delays only the requests that need it, never the socket
//! server or another reader's I/O.

use tokio::sync::{mpsc, oneshot};

use crate::registry::Registry;

type Job = Box<dyn FnOnce(&mut Registry) + Send>;

/// Handle to the worker thread. Cloneable.
#[derive(Clone, Debug)]
pub struct Worker {
    tx: mpsc::Sender<Job>,
}

/// The worker thread has stopped.
#[derive(Debug, thiserror::Error)]
#[error("registry worker stopped")]
pub struct WorkerGone;

impl Worker {
    /// Starts the worker thread with `reg`.
    pub fn start(mut reg: Registry) -> std::io::Result<Worker> {
        let (tx, mut rx) = mpsc::channel::<Job>(1024);
        std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut reg);
                }
            })?;
        Ok(Worker { tx })
    }

    /// Runs `f` on the registry thread and returns its result.
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
