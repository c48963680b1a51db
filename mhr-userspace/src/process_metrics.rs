//! The standard `process_*` metrics every Prometheus client library
//! exports (CPU, memory, descriptors, start time), read from /proc/self at
//! scrape time.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// What one scrape reads.
#[derive(Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub virtual_bytes: i64,
    pub start_time_seconds: f64,
    pub open_fds: i64,
    pub max_fds: i64,
}

impl ProcessStats {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        // SAFETY: sysconf and getrlimit have no preconditions.
        let (ticks, page_size) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills the struct it is given.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX)
        } else {
            -1
        };
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count() as i64);
        parse_stat(&stat, ticks as f64, page_size, boot_time, open_fds, max_fds)
    }
}

/// `/proc/self/stat`: fields after the command name (which may hold spaces
/// and parentheses), 1-based as in proc(5): utime 14, stime 15,
/// starttime 22, vsize 23, rss 24.
fn parse_stat(
    stat: &str,
    ticks: f64,
    page_size: i64,
    boot_time: f64,
    open_fds: i64,
    max_fds: i64,
) -> Option<ProcessStats> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = if ticks > 0.0 { ticks } else { 100.0 };
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_seconds: boot_time + field(22)? as f64 / ticks,
        virtual_bytes: i64::try_from(field(23)?).unwrap_or(i64::MAX),
        resident_bytes: i64::try_from(field(24)?).unwrap_or(0).saturating_mul(page_size),
        open_fds,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else { return Ok(()) };
        let counter = |encoder: &mut DescriptorEncoder, name, help, value: f64| {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)
        };
        counter(
            &mut encoder,
            "process_cpu_seconds",
            "User and system CPU time spent in seconds",
            stats.cpu_seconds,
        )?;
        let gauges: [(&str, &str, f64); 5] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", stats.resident_bytes as f64),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", stats.virtual_bytes as f64),
            (
                "process_start_time_seconds",
                "Start time of the process since the epoch in seconds",
                stats.start_time_seconds,
            ),
            ("process_open_fds", "Number of open file descriptors", stats.open_fds as f64),
            ("process_max_fds", "Maximum number of open file descriptors", stats.max_fds as f64),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (mhr (run) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 1000 104857600 2560 18446744073709551615";
        let stats = parse_stat(stat, 100.0, 4096, 1_700_000_000.0, 12, 1024).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.start_time_seconds, 1_700_000_010.0);
        assert_eq!(stats.virtual_bytes, 104_857_600);
        assert_eq!(stats.resident_bytes, 2560 * 4096);
        assert!(parse_stat("garbage", 100.0, 4096, 0.0, 0, 0).is_none());
    }

    #[test]
    fn this_process_reads_itself() {
        let stats = ProcessStats::read().unwrap();
        assert!(stats.resident_bytes > 0 && stats.open_fds > 0 && stats.max_fds >= stats.open_fds);
        assert!(stats.start_time_seconds > 1_600_000_000.0);
    }
}
