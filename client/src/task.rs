//! Tasks whose failure is an error of the check. A task that panics or is
//! cancelled must never make a check look finished: a lost batch would read
//! as "not found", and a stream that just ends as "nothing more to report".
//! Every task of the client is started through one of these helpers, and a
//! [`JoinError`] always becomes [`ClientError::TaskFailed`].

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};

use crate::error::{ClientError, Result};

/// A chunk of work that failed part way: what was done before the failure,
/// and the failure. The done part is delivered before the error, so work
/// already paid for (quota) is not thrown away.
#[derive(Debug)]
pub(crate) struct Incomplete<T> {
    /// Results obtained before the failure, in order.
    pub(crate) done: Vec<T>,
    /// Why the rest has none.
    pub(crate) error: ClientError,
}

impl<T> From<ClientError> for Incomplete<T> {
    fn from(error: ClientError) -> Self {
        Incomplete {
            done: Vec::new(),
            error,
        }
    }
}

/// Runs the CPU-bound or blocking `f` on the blocking pool.
///
/// # Errors
///
/// [`ClientError::TaskFailed`] naming `task` if `f` panicked.
pub(crate) async fn blocking<T, F>(task: &'static str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(failed(task))
}

/// Runs `fut` as a task of its own, so that a panic inside it is an error
/// here rather than the caller's panic. Dropping the returned future aborts
/// the task: a caller that stops waiting stops the work.
///
/// # Errors
///
/// The error of `fut`, or [`ClientError::TaskFailed`] naming `task`.
pub(crate) async fn run<T, E, Fut>(task: &'static str, fut: Fut) -> std::result::Result<T, E>
where
    T: Send + 'static,
    E: From<ClientError> + Send + 'static,
    Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
{
    let mut handle = AbortOnDrop(tokio::spawn(fut));
    match (&mut handle.0).await {
        Ok(r) => r,
        Err(e) => Err(E::from(failed(task)(e))),
    }
}

/// Streams the results of `check` over `items`, `chunk` at a time. The
/// iterator is pulled on the blocking pool (it may block on a file or
/// stdin), each chunk is checked by [`run`], and the first failure, a panic
/// anywhere included, is the last item before the channel closes (after the
/// results its chunk did obtain).
pub(crate) fn stream_chunks<It, T, F, Fut>(
    task: &'static str,
    items: It,
    chunk: usize,
    check: F,
) -> mpsc::Receiver<Result<T>>
where
    It: Iterator + Send + 'static,
    It::Item: Send + 'static,
    T: Send + 'static,
    F: Fn(Vec<It::Item>) -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<Vec<T>, Incomplete<T>>> + Send + 'static,
{
    let chunk = chunk.max(1);
    let (tx, rx) = mpsc::channel(chunk);
    supervise(task, tx, move |tx| async move {
        let mut items = items;
        loop {
            let pulled = blocking("input", move || {
                let next: Vec<It::Item> = items.by_ref().take(chunk).collect();
                (next, items)
            });
            let (next, rest) = match pulled.await {
                Ok(pulled) => pulled,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if next.is_empty() {
                return;
            }
            items = rest;
            let results = run(task, check(next)).await;
            match results {
                Ok(results) => {
                    for r in results {
                        if tx.send(Ok(r)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(Incomplete { done, error }) => {
                    for r in done {
                        if tx.send(Ok(r)).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            }
        }
    });
    rx
}

/// Runs `work` as a task that sends into `tx`. If it panics, the receiver
/// gets [`ClientError::TaskFailed`] naming `task` before the channel closes
/// (both senders keep it open until then).
fn supervise<T, F, Fut>(task: &'static str, tx: mpsc::Sender<Result<T>>, work: F)
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let worker = tokio::spawn(work(tx.clone()));
    tokio::spawn(async move {
        if let Err(e) = worker.await {
            let _ = tx.send(Err(failed(task)(e))).await;
        }
    });
}

/// The error of a `task` that ended in a [`JoinError`].
pub(crate) fn failed(task: &'static str) -> impl FnOnce(JoinError) -> ClientError {
    move |source| ClientError::TaskFailed { task, source }
}

/// Aborts the task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_panic_on_the_blocking_pool_is_a_task_error() {
        let r: Result<()> = blocking("finalize", || panic!("boom")).await;
        assert!(
            matches!(
                r,
                Err(ClientError::TaskFailed {
                    task: "finalize",
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_panic_in_a_task_is_an_error_not_a_panic() {
        let r: Result<()> = run("check", async { panic!("boom") }).await;
        assert!(
            matches!(r, Err(ClientError::TaskFailed { task: "check", .. })),
            "{r:?}"
        );
        let r: std::result::Result<(), Incomplete<()>> =
            run("check", async { panic!("boom") }).await;
        let r = r.map_err(|i| i.error);
        assert!(
            matches!(r, Err(ClientError::TaskFailed { task: "check", .. })),
            "{r:?}"
        );
        let ok: Result<i32> = run("check", async { Ok(7) }).await;
        assert_eq!(ok.ok(), Some(7));
    }

    #[tokio::test]
    async fn dropping_a_run_aborts_its_task() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let r = tokio::time::timeout(
            Duration::from_millis(20),
            run::<(), ClientError, _>("check", async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                flag.store(true, Ordering::SeqCst);
                Ok(())
            }),
        )
        .await;
        assert!(r.is_err());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_chunk_ends_the_stream_in_an_error() {
        let mut rx = stream_chunks("check", 0..10, 4, |chunk: Vec<i32>| async move {
            assert!(!chunk.contains(&5), "boom");
            Ok(chunk)
        });
        let mut got = Vec::new();
        while let Some(r) = rx.recv().await {
            got.push(r);
        }
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[..4].iter().all(Result::is_ok));
        assert!(
            matches!(got[4], Err(ClientError::TaskFailed { task: "check", .. })),
            "{got:?}"
        );
    }

    /// A chunk that fails part way delivers what it did, then the error.
    #[tokio::test]
    async fn an_incomplete_chunk_delivers_its_done_part_then_the_error() {
        let mut rx = stream_chunks("check", 0..10, 4, |chunk: Vec<i32>| async move {
            if chunk.contains(&5) {
                return Err(Incomplete {
                    done: vec![4],
                    error: ClientError::ReflectedElement,
                });
            }
            Ok(chunk)
        });
        let mut got = Vec::new();
        while let Some(r) = rx.recv().await {
            got.push(r);
        }
        let oks: Vec<i32> = got
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(oks, [0, 1, 2, 3, 4]);
        assert!(
            matches!(got.last(), Some(Err(ClientError::ReflectedElement))),
            "{got:?}"
        );
        assert_eq!(got.len(), 6);
    }

    #[tokio::test]
    async fn a_stream_ends_after_its_last_chunk() {
        let mut rx = stream_chunks(
            "check",
            0..10,
            4,
            |chunk: Vec<i32>| async move { Ok(chunk) },
        );
        let mut got = Vec::new();
        while let Some(r) = rx.recv().await {
            got.push(r.ok());
        }
        assert_eq!(got, (0..10).map(Some).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_stream_worker_ends_in_an_error_not_a_short_stream() {
        let (tx, mut rx) = mpsc::channel(4);
        supervise("check", tx, |tx| async move {
            let _ = tx.send(Ok(1)).await;
            panic!("boom");
        });
        assert!(matches!(rx.recv().await, Some(Ok(1))));
        let last = rx.recv().await;
        assert!(
            matches!(
                last,
                Some(Err(ClientError::TaskFailed { task: "check", .. }))
            ),
            "{last:?}"
        );
        assert!(rx.recv().await.is_none());
    }
}
