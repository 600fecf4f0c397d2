//! Crash tests: a child process (the test binary re-run on one ignored test) killed with
//! SIGKILL at random moments and restarted, while the parent checks what survived.

use std::future::Future;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The random source of a crash test's kill points: seeded from `MOODBRIDGE_CRASH_SEED`
/// when set, from the clock otherwise. The seed is printed, so a failure can be
/// replayed.
///
/// ```
/// let mut rng = moodbridge_core::testing::crash_rng("doc");
/// # use rand::Rng;
/// let _pause: u64 = rng.random_range(0..40);
/// ```
pub fn crash_rng(test: &str) -> StdRng {
    let seed = std::env::var("MOODBRIDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("{test} seed: {seed} (MOODBRIDGE_CRASH_SEED={seed} replays it)");
    StdRng::seed_from_u64(seed)
}

/// A crash test's child process: this test binary re-run on one (ignored) test, with
/// its output discarded; killed with SIGKILL when dropped, so a failing assertion in
/// the parent leaves nothing running.
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use moodbridge_core::testing::{CrashChild, crash_rng};
/// # async fn run() {
/// let mut rng = crash_rng("my crash test");
/// let deadline = Instant::now() + Duration::from_secs(120);
/// let mut child = CrashChild::spawn("my_child", &[("MY_CHILD_DIR", "/tmp/x".into())]);
/// child.kill_after_progress(&mut rng, deadline, Duration::from_millis(40), || async { true }).await;
/// # }
/// ```
#[derive(Debug)]
pub struct CrashChild(Child);

impl CrashChild {
    /// Run test `name` of this test binary (`--ignored --exact name`) with `env` added.
    ///
    /// # Panics
    /// If the process cannot be started: the test cannot go on.
    pub fn spawn(name: &str, env: &[(&str, String)]) -> CrashChild {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        command
            .args(["--ignored", "--exact", name, "--test-threads=1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        CrashChild(command.spawn().expect("the crash test's child starts"))
    }

    /// Kill it with SIGKILL and reap it (a no-op once it has ended).
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Wait until `progressed` says the child has made progress (polled every 2 ms),
    /// then a random pause of up to `max_pause`, then kill it.
    ///
    /// # Panics
    /// If the child ends first (it finished before the kills were done), or `deadline`
    /// passes without progress.
    pub async fn kill_after_progress<F, Fut>(
        &mut self,
        rng: &mut StdRng,
        deadline: Instant,
        max_pause: Duration,
        mut progressed: F,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        loop {
            assert!(Instant::now() < deadline, "the child made no progress");
            if let Ok(Some(status)) = self.0.try_wait() {
                panic!("the child ended ({status}) before it was killed");
            }
            if progressed().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let pause = rng.random_range(0..max_pause.as_millis().max(1) as u64);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        self.kill();
    }

    /// Wait for the child to end by itself.
    ///
    /// # Panics
    /// If `deadline` passes first.
    pub async fn wait(&mut self, deadline: Instant) -> ExitStatus {
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not finish in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for CrashChild {
    fn drop(&mut self) {
        self.kill();
    }
}
