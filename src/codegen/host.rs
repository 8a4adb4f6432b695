//! The host the cost model plans for: its cores and cache sizes (read from
//! the system), and the rates its caches and kernels sustain.
//!
//! The rates come from a calibration (`cellc calibrate`: a second or two of
//! measurements, saved in a cache file) when there is one for this machine,
//! and otherwise from fixed defaults, so that the plans a kernel chooses do not
//! vary from run to run with the noise of a measurement taken inside the first
//! compile. `CELLC_HOST=PATH` reads the calibration from PATH instead of the
//! cache; `CELLC_HOST=defaults` ignores any calibration.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

/// What the host can do.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub cores: usize,
    /// Data cache sizes in bytes (per core for L1/L2; the shared L3).
    pub l1: usize,
    pub l2: usize,
    pub l3: usize,
    /// Read bandwidth of one core, GB/s, from data that fits in L2, in L3, and
    /// from DRAM.
    pub bw_l2: f64,
    pub bw_l3: f64,
    pub bw_dram: f64,
    /// FLOP rates of one core, GFLOP/s: the blocked product of many rows
    /// (`kernels::gemm`, the hoisted projection's) on a large product, and
    /// the generated kernels (128-bit vectors) on a batched product.
    pub gemm_gflops: f64,
    pub jit_gflops: f64,
    /// The panel kernels of the `gemm` plans' per-step products, at the
    /// widest width this host has ([`crate::kernels::panel`]), on a batched product.
    pub panel_gflops: f64,
    /// Weights per nanosecond (G/s) one core's panel kernels widen and
    /// multiply at batch 1 from cache, stored in bf16 and in int8: the
    /// ceiling of narrow weights once the bytes stop being the limit
    /// (widening costs instructions: on AVX2 fewer weights a second than
    /// f32 reads from L2).
    pub bf16_gws: f64,
    pub int8_gws: f64,
    /// Cost of one barrier among the cores, microseconds.
    pub barrier_us: f64,
    /// Where the rates come from.
    pub source: HostSource,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HostSource {
    /// The fixed defaults; the reason a calibration was not used, if any.
    Defaults(Option<String>),
    /// A calibration file.
    Calibrated(PathBuf),
    /// Measured just now (`calibrate`).
    Measured,
}

impl HostSource {
    /// For `--emit schedule`.
    pub fn describe(&self) -> String {
        match self {
            HostSource::Defaults(None) => {
                "default rates (run `cellc calibrate` to measure this machine)".into()
            }
            HostSource::Defaults(Some(why)) => format!("default rates ({why})"),
            HostSource::Calibrated(p) => format!("rates calibrated in {}", p.display()),
            HostSource::Measured => "rates measured just now".into(),
        }
    }
}

fn read_cache_sizes() -> (usize, usize, usize) {
    let mut l1 = 32 << 10;
    let mut l2 = 512 << 10;
    let mut l3 = 8 << 20;
    for i in 0..8 {
        let base = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).ok();
        let (Some(level), Some(size), Some(kind)) = (read("level"), read("size"), read("type"))
        else {
            continue;
        };
        let size = size.trim();
        let bytes = if let Some(k) = size.strip_suffix('K') {
            k.parse::<usize>().ok().map(|v| v << 10)
        } else if let Some(m) = size.strip_suffix('M') {
            m.parse::<usize>().ok().map(|v| v << 20)
        } else {
            size.parse().ok()
        };
        let Some(bytes) = bytes else { continue };
        match (level.trim(), kind.trim()) {
            ("1", "Data") => l1 = bytes,
            ("2", _) => l2 = bytes,
            ("3", _) => l3 = bytes,
            _ => {}
        }
    }
    (l1, l2, l3)
}

/// The cores and caches of this machine, with default rates: those of one
/// core of a recent x86-64 server (a 2-vCPU Xeon of the Sapphire Rapids
/// generation, measured by `cellc calibrate` and rounded down), a little
/// conservative for most desktops. Deterministic: the same machine gets the
/// same plans.
pub fn defaults(why: Option<String>) -> Host {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (l1, l2, l3) = read_cache_sizes();
    Host {
        cores,
        l1,
        l2,
        l3,
        bw_l2: DEFAULT_BW_L2,
        bw_l3: DEFAULT_BW_L3,
        bw_dram: DEFAULT_BW_DRAM,
        gemm_gflops: DEFAULT_GEMM_GFLOPS,
        jit_gflops: DEFAULT_GEMM_GFLOPS * 0.4,
        panel_gflops: default_panel_gflops(crate::kernels::Isa::detect()),
        bf16_gws: default_narrow_gws(crate::kernels::Isa::detect()).0,
        int8_gws: default_narrow_gws(crate::kernels::Isa::detect()).1,
        barrier_us: 1.0,
        source: HostSource::Defaults(why),
    }
}

const DEFAULT_BW_L2: f64 = 60.0;
const DEFAULT_BW_L3: f64 = 25.0;
const DEFAULT_BW_DRAM: f64 = 8.0;
const DEFAULT_GEMM_GFLOPS: f64 = 80.0;

/// The panel kernels' rate per core when nothing was measured, by width:
/// 110 GFLOP/s measured with AVX-512 on the 2-vCPU Xeon of
/// docs/performance.md (about 65 % of its FMA peak), half that with AVX2.
fn default_panel_gflops(isa: crate::kernels::Isa) -> f64 {
    match isa {
        crate::kernels::Isa::Avx512 => 110.0,
        crate::kernels::Isa::Avx2 => 55.0,
        // A quarter of AVX-512's lanes; not measured (no aarch64 host).
        crate::kernels::Isa::Neon => 25.0,
        crate::kernels::Isa::Scalar => 4.0,
    }
}

/// Narrow weights a core widens and multiplies per nanosecond at batch 1
/// (bf16, int8) when nothing was measured, by width: AVX2 as measured on a
/// 2-vCPU AMD EPYC Zen 3 (9.2 and 6.5, rounded down); AVX-512 estimated at
/// twice that (a Zen 4 calibrates higher still).
fn default_narrow_gws(isa: crate::kernels::Isa) -> (f64, f64) {
    match isa {
        crate::kernels::Isa::Avx512 => (18.0, 12.0),
        crate::kernels::Isa::Avx2 => (9.0, 6.0),
        // A guess (no aarch64 host measured).
        crate::kernels::Isa::Neon => (4.0, 3.0),
        crate::kernels::Isa::Scalar => (1.0, 1.0),
    }
}

/// The narrow panel kernels at batch 1 over a matrix that L2 holds: G
/// weights/s, best of a few.
fn narrow_rate(precision: crate::ir::Precision) -> f64 {
    use crate::kernels::panel;
    let (m, k) = (256, 256);
    let w: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let mut stored = vec![0.0f32; panel::stored_len(m, k, precision).unwrap_or(0)];
    panel::pack_at(&w, m, k, precision, &mut stored);
    let x = vec![0.25f32; k];
    let mut dst = vec![0.0f32; m];
    let isa = crate::kernels::Isa::detect();
    let mut best = f64::MAX;
    // Ten products per sample (a product is ~10 µs: one alone is near the
    // timer's and the frequency ramp's noise), best of 20.
    for _ in 0..20 {
        let t = Instant::now();
        for _ in 0..10 {
            panel::product_at(isa, precision, &stored, m, k, &x, k, 1, &mut dst, m);
        }
        best = best.min(t.elapsed().as_secs_f64() / 10.0);
    }
    std::hint::black_box(&dst);
    (m * k) as f64 / best / 1e9
}

/// GB/s of summing `bytes` of floats, best of a few passes (after one to warm).
fn read_bandwidth(bytes: usize, budget_passes: usize) -> f64 {
    let v = vec![1.0f32; bytes / 4];
    let mut best = f64::MAX;
    let mut sink = 0.0f32;
    for pass in 0..=budget_passes {
        let t = Instant::now();
        sink += crate::kernels::probe::sum_floats(&v);
        let dt = t.elapsed().as_secs_f64();
        if pass > 0 {
            best = best.min(dt);
        }
    }
    std::hint::black_box(sink);
    bytes as f64 / best / 1e9
}

fn gemm_rate() -> f64 {
    let (m, n, k) = (256, 96, 256);
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = Instant::now();
        crate::kernels::gemm::accumulate(m, n, k, (&a, k, 1), &b, &mut c);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

/// The panel kernels on a batched product (as `gemm_rate`), at the widest
/// width this host has, best of four.
fn panel_rate() -> f64 {
    use crate::kernels::panel;
    let (m, batch, k) = (256, 96, 256);
    let w = vec![0.5f32; m * k];
    let mut panels = vec![0.0f32; panel::panels_len(m, k).unwrap_or(0)];
    panel::pack(&w, m, k, &mut panels);
    let x = vec![0.25f32; batch * k];
    let mut dst = vec![0.0f32; batch * m];
    let isa = crate::kernels::Isa::detect();
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = Instant::now();
        panel::product(isa, &panels, m, k, &x, k, batch, &mut dst, m);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * (m * batch * k) as f64 / best / 1e9
}

/// Measures this machine (a second or two): the figures `cellc calibrate`
/// saves.
pub fn calibrate() -> Host {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (l1, l2, l3) = read_cache_sizes();
    // Sizes within each level (capped: a virtual machine's share of a large L3
    // is smaller than what /sys reports, and a probe must stay quick).
    let bw_l2 = read_bandwidth((l2 / 2).clamp(64 << 10, 1 << 20), 20);
    let bw_l3 = read_bandwidth((l3 / 4).clamp(l2 * 2, 8 << 20), 6);
    let bw_dram = read_bandwidth((l3 * 2).clamp(64 << 20, 96 << 20), 1);
    let gemm_gflops = gemm_rate();
    Host {
        cores,
        l1,
        l2,
        l3,
        bw_l2,
        bw_l3,
        bw_dram,
        gemm_gflops,
        // Generated kernels reach about 40% of `gemm` on batched products
        // (docs/codegen.md: ~30 against ~75 GFLOP/s per core).
        jit_gflops: gemm_gflops * 0.4,
        panel_gflops: panel_rate(),
        bf16_gws: narrow_rate(crate::ir::Precision::Bf16),
        int8_gws: narrow_rate(crate::ir::Precision::Int8),
        barrier_us: 1.0,
        source: HostSource::Measured,
    }
}

/// The calibration file: `$CELLC_HOST` if set (not `defaults`), else
/// `$XDG_CACHE_HOME/cellc/host.json` or `~/.cache/cellc/host.json`.
pub fn calibration_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CELLC_HOST") {
        return (p != "defaults").then(|| PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("cellc").join("host.json"))
}

/// The calibration as JSON.
pub fn to_json(h: &Host) -> String {
    let v = serde_json::json!({
        "cellc_host": 3,
        "cores": h.cores,
        "l1": h.l1,
        "l2": h.l2,
        "l3": h.l3,
        "bw_l2_gbs": h.bw_l2,
        "bw_l3_gbs": h.bw_l3,
        "bw_dram_gbs": h.bw_dram,
        "gemm_gflops": h.gemm_gflops,
        "jit_gflops": h.jit_gflops,
        "panel_gflops": h.panel_gflops,
        "bf16_gws": h.bf16_gws,
        "int8_gws": h.int8_gws,
        "barrier_us": h.barrier_us,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Reads a calibration; it must be for this machine (its cores and caches).
pub fn from_json(text: &str, path: PathBuf) -> Result<Host, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a calibration: {e}"))?;
    if v["cellc_host"].as_u64() != Some(3) {
        return Err(
            "not a calibration of this version of cellc (run `cellc calibrate` again)".into(),
        );
    }
    let int = |k: &str| {
        v[k].as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| format!("no `{k}`"))
    };
    let rate = |k: &str| match v[k].as_f64() {
        Some(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("`{k}` is not a positive number")),
    };
    let here = defaults(None);
    let h = Host {
        cores: int("cores")?,
        l1: int("l1")?,
        l2: int("l2")?,
        l3: int("l3")?,
        bw_l2: rate("bw_l2_gbs")?,
        bw_l3: rate("bw_l3_gbs")?,
        bw_dram: rate("bw_dram_gbs")?,
        gemm_gflops: rate("gemm_gflops")?,
        jit_gflops: rate("jit_gflops")?,
        panel_gflops: rate("panel_gflops")?,
        bf16_gws: rate("bf16_gws")?,
        int8_gws: rate("int8_gws")?,
        barrier_us: rate("barrier_us")?,
        source: HostSource::Calibrated(path),
    };
    if (h.cores, h.l1, h.l2, h.l3) != (here.cores, here.l1, here.l2, here.l3) {
        return Err("it was made on another machine (other cores or caches)".into());
    }
    Ok(h)
}

/// How much faster than the float32 kernels the hoisted projection runs on
/// AMX tiles (`kernels::bf16`): measured 3.5-5.8x on the LSTM projections of
/// H = 128-1024 (`cargo bench --bench gemm`, a Sapphire Rapids-class Xeon);
/// the lower end, until the calibration measures it.
const AMX_PROJECTION_SPEEDUP: f64 = 3.5;

/// How much faster than the float32 kernels the int8 ones multiply where
/// the host has VNNI (`kernels::int8`): measured 1.9-2.5x on the LSTM
/// shapes of H = 128-1024 (`cargo bench --bench gemm`, a Sapphire
/// Rapids-class Xeon); the lower end.
const VNNI_SPEEDUP: f64 = 1.9;
/// The same on AMX tiles (`tdpbusd`), where the float32 finish of each
/// element and the quantization of the columns bound it: the LSTM's step at
/// batch 64 on the `gemm` plan ran 3.5-4.2x faster than in float32 (H =
/// 256-1024, the same Xeon).
const AMX_INT8_SPEEDUP: f64 = 3.5;

impl Host {
    /// The rates a kernel computing in `compute` sees: under
    /// [`Compute::Bf16`](crate::Compute::Bf16) on a host with AMX, the
    /// hoisted projection's product runs at [`AMX_PROJECTION_SPEEDUP`] times
    /// the float32 kernels' rate (so the cost model hoists where that pays);
    /// under [`Compute::Int8`](crate::Compute::Int8) the projection's and the
    /// step's products at [`VNNI_SPEEDUP`] times on a host with VNNI,
    /// [`AMX_INT8_SPEEDUP`] with AMX.
    pub fn computing(&self, compute: crate::Compute) -> Host {
        use crate::kernels::int8::Dots;
        let amx = compute == crate::Compute::Bf16 && crate::kernels::bf16::Dots::Amx.available();
        let int8 = match Dots::best() {
            _ if compute != crate::Compute::Int8 => 1.0,
            Dots::Amx => AMX_INT8_SPEEDUP,
            // Plain AVX2's `vpmaddwd` runs about as fast as float32 FMAs;
            // the portable path is far slower (the model cannot rescue it).
            Dots::Portable | Dots::Avx2 => 1.0,
            Dots::AvxVnni | Dots::Avx512Vnni => VNNI_SPEEDUP,
        };
        let gemm = if amx { AMX_PROJECTION_SPEEDUP } else { int8 };
        Host {
            gemm_gflops: self.gemm_gflops * gemm,
            panel_gflops: self.panel_gflops * int8,
            ..self.clone()
        }
    }
}

/// The host's figures: the calibration if there is a valid one, else the
/// defaults (read once per process).
pub fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let Some(path) = calibration_path() else {
            return defaults(None);
        };
        match read_calibration(&path) {
            Ok(Some(text)) => from_json(&text, path.clone()).unwrap_or_else(|why| {
                defaults(Some(format!(
                    "the calibration in {} is not used: {why}",
                    path.display()
                )))
            }),
            Ok(None) => defaults(None),
            Err(why) => defaults(Some(format!(
                "the calibration in {} is not used: {why}",
                path.display()
            ))),
        }
    })
}

/// The largest calibration file read (one is a few hundred bytes).
const MAX_CALIBRATION_BYTES: u64 = 64 << 10;

/// The text of the calibration file, `None` if there is none. Only a
/// regular file of at most [`MAX_CALIBRATION_BYTES`] is read: a FIFO there
/// would hang every compile, `/dev/zero` would fill the memory. The file is
/// opened without blocking and checked once open, so that nothing swapped in
/// after a check is read.
fn read_calibration(path: &std::path::Path) -> Result<Option<String>, String> {
    use std::io::Read;
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.custom_flags(libc::O_NONBLOCK);
    }
    let file = match open.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_CALIBRATION_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CALIBRATION_BYTES {
        return Err(format!(
            "it is larger than {} KiB",
            MAX_CALIBRATION_BYTES >> 10
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "it is not UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_deterministic_and_calibrations_round_trip() {
        assert_eq!(defaults(None), defaults(None));
        let mut h = defaults(None);
        h.bw_l2 = 123.5;
        let p = PathBuf::from("x.json");
        let back = from_json(&to_json(&h), p.clone()).unwrap();
        assert_eq!(back.bw_l2, 123.5);
        assert_eq!(back.source, HostSource::Calibrated(p.clone()));
        // Another machine's calibration is refused.
        h.cores += 1;
        assert!(from_json(&to_json(&h), p.clone())
            .unwrap_err()
            .contains("another machine"));
        assert!(from_json("{}", p).is_err());
    }
}
