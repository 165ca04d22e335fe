//! collectd network-protocol decode throughput, in values/s, on datagrams captured from real
//! collectd 5.12 (plain, signed, encrypted; 28-29 value lists each). Budget: ≥ 3 M values/s
//! plain per core, ≥ 1 M/s signed. Run: `cargo bench -p medic-benches --bench decode`

use std::hint::black_box;

use collectd_codec::network::{Credentials, Item, SecurityLevel, decode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/fixtures/collectd/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let mut creds = Credentials::default();
    creds.insert("fixture-user", "fixture-secret");
    let mut group = c.benchmark_group("decode");
    for (name, level) in [
        ("plain", SecurityLevel::None),
        ("sign", SecurityLevel::Sign),
        ("encrypt", SecurityLevel::Encrypt),
    ] {
        let bytes = fixture(&format!("{name}.bin"));
        let mut out = Vec::new();
        decode(&bytes, level, &creds, &mut out).unwrap();
        let values: usize = out
            .iter()
            .map(|d| match &d.item {
                Item::Values { samples, .. } => samples.len(),
                Item::Notification { .. } => 0,
            })
            .sum();
        group.throughput(Throughput::Elements(values as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                decode(black_box(&bytes), level, &creds, &mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
