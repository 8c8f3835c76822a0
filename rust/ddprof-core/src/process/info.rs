//! What a process says about itself, for tagging: name, executable, the few environment
//! variables that name its service, and its cgroup (which names its container).
//!
//! Input: a pid, read once when the process is first sampled (and again when it execs).
//! Output: a [`ProcessInfo`]; fields that cannot be read stay empty, never an error.
//! Non-goals: parsing container ids (Python's tagging does it from the cgroup text).
use std::io::Read;

/// Environment variables worth keeping; everything else in environ (secrets included) is
/// dropped on the spot.
pub const ENV_KEYS: [&str; 6] = ["DD_SERVICE", "DD_ENV", "DD_VERSION", "OTEL_SERVICE_NAME", "POD_NAME", "KUBERNETES_POD_NAME"];

const MAX_ENVIRON: u64 = 256 * 1024;
const MAX_CGROUP: u64 = 16 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    pub exe: String,
    pub env: Vec<(String, String)>,
    pub cgroup: String,
}

fn read_bounded(path: &str, limit: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(limit).read_to_end(&mut buf);
    }
    buf
}

/// The kept variables of an environ block (NUL-separated KEY=VALUE).
pub fn filter_environ(block: &[u8]) -> Vec<(String, String)> {
    block
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=')?;
            let key = std::str::from_utf8(&kv[..eq]).ok()?;
            ENV_KEYS.contains(&key).then(|| (key.to_string(), String::from_utf8_lossy(&kv[eq + 1..]).into_owned()))
        })
        .collect()
}

impl ProcessInfo {
    pub fn read(pid: u32, name: &str) -> ProcessInfo {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let env = filter_environ(&read_bounded(&format!("/proc/{pid}/environ"), MAX_ENVIRON));
        let cgroup = String::from_utf8_lossy(&read_bounded(&format!("/proc/{pid}/cgroup"), MAX_CGROUP)).into_owned();
        ProcessInfo { pid, name: name.to_string(), exe, env, cgroup }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_service_variables() {
        let block = b"PATH=/bin\0DD_SERVICE=web\0DD_API_KEY=secret\0OTEL_SERVICE_NAME=x=y\0broken\0DD_ENV=\0";
        assert_eq!(
            filter_environ(block),
            vec![
                ("DD_SERVICE".into(), "web".into()),
                ("OTEL_SERVICE_NAME".into(), "x=y".into()),
                ("DD_ENV".into(), String::new()),
            ]
        );
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let info = ProcessInfo::read(me, "me");
        assert!(info.exe.ends_with(std::env::current_exe().expect("exe").file_name().expect("name").to_str().expect("utf8")));
        // /proc/PID/cgroup lines are hierarchy-ID:controllers:path.
        assert!(info.cgroup.lines().next().is_some_and(|l| l.splitn(3, ':').count() == 3 && l.contains(":/")), "{:?}", info.cgroup);
    }
}
