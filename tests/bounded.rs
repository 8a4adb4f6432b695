//! Bounded cost on hostile files: the ONNX reader and the safetensors reader
//! hold memory in proportion to the file (at most twice its size, plus a few
//! MiB), and their error messages stay short, whatever the file holds.
//!
//! One test function: the peak is measured with a global allocator, which
//! other tests running at the same time would disturb.

// Tests and programs print what they measure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Peak;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the same
// arguments; the counting is atomic or thread-local.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn field(number: u64, body: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// `count` copies of `item` inside a message `inner` inside the graph, inside a model.
fn model(repeat_in: &[u64], item: &[u8], count: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(item.len() * count);
    for _ in 0..count {
        body.extend_from_slice(item);
    }
    for &n in repeat_in.iter().rev() {
        let mut outer = Vec::with_capacity(body.len() + 10);
        field(n, &body, &mut outer);
        body = outer;
    }
    body
}

/// Peak memory (beyond what was live before) and the error of `f`.
fn measure(f: impl FnOnce() -> Result<(), String>) -> (usize, String) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let e = f().err().unwrap_or_default();
    (PEAK.load(Ordering::Relaxed) - base, e)
}

#[test]
fn hostile_files_cost_memory_in_proportion_and_short_messages() {
    const MB: usize = 1 << 20;
    let empty_string = [0x0a, 0x00]; // field 1, length 0
    let mut tiny_node = Vec::new();
    field(4, b"Op", &mut tiny_node); // op_type
    let mut one_node = Vec::new();
    field(1, &tiny_node, &mut one_node);
    let mut attribute = Vec::new();
    field(5, &[0x0a, 0x01, b'a'], &mut attribute); // attribute { name: "a" }
    let mut initializer = Vec::new();
    field(5, &[0x08, 0x01, 0x08, 0x01], &mut initializer); // dims: 1, 1
    let mut graph_input = Vec::new();
    field(11, &[0x0a, 0x01, b'x'], &mut graph_input);
    // Tensor and attribute values that cost more to hold than to write (a
    // value of one byte in the file held as eight, an empty field held as a
    // 16-byte slice): these once made the reader hold 8-9 times the file.
    let mut packed_ints = Vec::new();
    field(7, &vec![1u8; 24 << 20], &mut packed_ints); // int64_data, packed
    let mut empty_floats = Vec::new();
    for _ in 0..(10 << 20) {
        field(4, &[], &mut empty_floats); // float_data, packed and empty
    }
    // One node with 10,000 attributes of distinct names, each of 1,024
    // values (the most one attribute may hold).
    let attributes_of = |values: &dyn Fn(&mut Vec<u8>)| {
        let mut node = Vec::new();
        for i in 0..10_000 {
            let mut a = Vec::new();
            field(1, format!("a{i}").as_bytes(), &mut a); // name
            values(&mut a);
            field(5, &a, &mut node);
        }
        node
    };
    let strings_node = attributes_of(&|a| {
        for _ in 0..1024 {
            field(9, &[], a); // strings: ""
        }
    });
    let ints_node = attributes_of(&|a| field(8, &[1u8; 1024], a)); // ints, packed
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("packed int64s", model(&[7, 5], &packed_ints, 1)),
        ("empty packed floats", model(&[7, 5], &empty_floats, 1)),
        ("attribute strings", model(&[7, 1], &strings_node, 1)),
        ("attribute ints", model(&[7, 1], &ints_node, 1)),
        // 32 million empty inputs of one node.
        ("node inputs", model(&[7, 1], &empty_string, 32 << 20)),
        // 16 million nodes.
        ("nodes", model(&[7], &one_node, 8 << 20)),
        // Attributes of one node.
        ("attributes", model(&[7, 1], &attribute, 10 << 20)),
        ("initializers", model(&[7], &initializer, 10 << 20)),
        ("graph inputs", model(&[7], &graph_input, 12 << 20)),
        // Distinct op types (their list once made a 201 MB message).
        ("op types", {
            let mut g = Vec::new();
            for i in 0..200_000u32 {
                let mut n = Vec::new();
                field(4, format!("Op{i:0>200}").as_bytes(), &mut n);
                field(1, &n, &mut g);
            }
            let mut m = Vec::new();
            field(7, &g, &mut m);
            m
        }),
    ];
    for (what, bytes) in &cases {
        let (peak, e) = measure(|| {
            cellc::onnx::import(bytes)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        eprintln!(
            "{what}: {} KB peak, {} MB file: {e}",
            peak >> 10,
            bytes.len() / MB
        );
        assert!(!e.is_empty(), "{what}: imported");
        assert!(e.len() < 1000, "{what}: a {} byte message", e.len());
        assert!(
            peak < 2 * bytes.len() + 8 * MB,
            "{what}: {} MB peak for a {} MB file",
            peak / MB,
            bytes.len() / MB
        );
    }
    // safetensors: a header that claims many tensors, and a huge shape.
    let mut header = String::from("{");
    for i in 0..400_000 {
        header.push_str(&format!(
            "\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}},"
        ));
    }
    header.pop();
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    let (peak, e) = measure(|| {
        cellc::Weights::from_safetensors_bytes(&file)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    eprintln!(
        "safetensors: {} KB peak, {} MB file: {e}",
        peak >> 10,
        file.len() / MB
    );
    assert!(!e.is_empty() && e.len() < 1000, "{} byte message", e.len());
    assert!(
        peak < 2 * file.len() + 8 * MB,
        "safetensors: {} MB peak for a {} MB file",
        peak / MB,
        file.len() / MB
    );
}
