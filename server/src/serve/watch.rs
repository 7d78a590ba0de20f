//! Watching the served index file: the server serves the copy it read and
//! checked (docs/PROTOCOL.md §5), so a file changed on disk changes nothing
//! until a reload. An operator who copied a new index over the served path
//! and forgot the SIGHUP would otherwise never know: this task notices the
//! change (device, inode, length or modification time differ from the file
//! that was loaded) and logs one warning per change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::index::reader::FileStamp;
use crate::serve::state::AppState;

/// How often the file is looked at: one `stat` call.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Spawns the watch of `path` (the configured index path): every
/// [`WATCH_INTERVAL`], compares the file on disk with the one the served
/// index was read from, and warns once for each new state that differs.
pub(crate) fn spawn(state: Arc<AppState>, path: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last state warned about, so a change is reported once.
        let mut warned: Option<Option<FileStamp>> = None;
        loop {
            tick.tick().await;
            let on_disk = tokio::fs::metadata(&path)
                .await
                .ok()
                .map(|m| FileStamp::of(&m));
            let served = state.current();
            if on_disk == Some(served.index.stamp()) {
                warned = None;
                continue;
            }
            if warned == Some(on_disk) {
                continue;
            }
            warned = Some(on_disk);
            let served_id = hex::encode(served.index.index_id());
            if on_disk.is_some() {
                tracing::warn!(
                    path = %path.display(),
                    served_index_id = %served_id,
                    "the index file changed on disk; send SIGHUP to load it \
                     (still serving the index read at the last load)"
                );
            } else {
                tracing::warn!(
                    path = %path.display(),
                    served_index_id = %served_id,
                    "the index file is gone from disk (still serving the index read at the last load)"
                );
            }
        }
    })
}
