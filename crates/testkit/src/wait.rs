//! Waiting for a condition in tests, never for a fixed time: poll the condition with a short
//! pause between attempts and fail the test, naming what was awaited, once the deadline has
//! passed. A sleep that is itself the thing under test (letting an expiry pass) is not a
//! wait for a condition and does not belong here.
use std::future::Future;
use std::time::{Duration, Instant};

/// The pause between two attempts: short, so a condition is seen soon after it holds.
const PAUSE: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, and returns that value; panics with `what` when
/// `deadline` has passed first.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(PAUSE).await;
    }
}

/// Polls `check` until it holds; panics with `what` when `deadline` has passed first.
pub async fn until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(deadline, what, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await
}

/// [`until`] for code outside an async runtime (or that must block its thread).
pub fn until_blocking(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let mut n = 0;
        let got = eventually(Duration::from_secs(5), "three attempts", || {
            n += 1;
            let v = (n == 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for never")]
    async fn fails_after_the_deadline() {
        until(Duration::from_millis(50), "never", || async { false }).await;
    }

    #[test]
    #[should_panic(expected = "waiting for never")]
    fn blocking_fails_after_the_deadline() {
        until_blocking(Duration::from_millis(50), "never", || false);
    }
}
