//! The planning threads: a small fixed set of long-lived OS threads on which async callers
//! run [`super::plan`] (CPU-bound for up to the rules' wall-time budget), so that it never
//! holds an async worker thread.
//!
//! Why not tokio's blocking pool: with the worker's 32 events in flight it grows to one
//! thread per event, and every plan then pays a thread wake-up and a context switch on a
//! machine with a few cores (measured: ~100 µs of CPU per event, more than the 20 rules
//! themselves). Here as many threads as cores take jobs from one queue and run them back to
//! back; a job beyond that waits its turn instead of time-slicing against the others (which
//! also keeps a rule's wall-time budget from being eaten by other events' rules).
//!
//! Owns only the threads and the queue; it must not know what a job does. A job that panics
//! is reported to its caller as interrupted, and its thread goes on with the next job.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Fewest and most planning threads, whatever the number of cores.
const MIN_THREADS: usize = 2;
const MAX_THREADS: usize = 16;

/// Why a job has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The job panicked, or the planning threads could not be started.
    #[error("planning did not finish: {0}")]
    Interrupted(String),
}

static QUEUE: OnceLock<Result<Mutex<Sender<Job>>, String>> = OnceLock::new();

/// Runs `job` on a planning thread and returns its result.
pub async fn run<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PoolError> {
    let (reply, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(job());
    });
    let queue = QUEUE
        .get_or_init(start)
        .as_ref()
        .map_err(|e| PoolError::Interrupted(e.clone()))?;
    queue
        .lock()
        .map_err(|_| PoolError::Interrupted("the planning queue is poisoned".into()))?
        .send(job)
        .map_err(|_| PoolError::Interrupted("the planning threads are gone".into()))?;
    // A dropped reply means the job panicked (caught in `serve`).
    result
        .await
        .map_err(|_| PoolError::Interrupted("the plan panicked".into()))
}

/// Starts one thread per core (within bounds), all serving one queue.
fn start() -> Result<Mutex<Sender<Job>>, String> {
    let threads = std::thread::available_parallelism()
        .map_or(MIN_THREADS, usize::from)
        .clamp(MIN_THREADS, MAX_THREADS);
    let (queue, jobs) = mpsc::channel::<Job>();
    let jobs = Arc::new(Mutex::new(jobs));
    for i in 0..threads {
        let jobs = jobs.clone();
        std::thread::Builder::new()
            .name(format!("concierge-plan-{i}"))
            .spawn(move || serve(&jobs))
            .map_err(|e| format!("cannot start a planning thread: {e}"))?;
    }
    Ok(Mutex::new(queue))
}

/// One planning thread: takes jobs until the queue is gone.
fn serve(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else { return };
        // The job's reply is dropped with it: the caller sees the panic as an interruption.
        let _ = panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_run_off_the_async_thread_and_a_panic_is_an_interruption() {
        let caller = std::thread::current().id();
        let ran_on = run(|| std::thread::current().id()).await.expect("ran");
        assert_ne!(ran_on, caller);
        let panicked = run(|| -> u8 { panic!("job bug") }).await;
        assert!(
            matches!(panicked, Err(PoolError::Interrupted(_))),
            "{panicked:?}"
        );
        // The thread that caught the panic serves the next jobs.
        let many: Vec<_> = (0..3 * MAX_THREADS).map(|i| run(move || i * 2)).collect();
        for (i, r) in futures::future::join_all(many)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(r, Ok(i * 2));
        }
    }
}
