//! Writes collectd network-protocol datagrams (plain parts) for tests and load generators.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const HOST: u16 = 0x0000;
pub const PLUGIN: u16 = 0x0002;
pub const PLUGIN_INSTANCE: u16 = 0x0003;
pub const TYPE: u16 = 0x0004;
pub const TYPE_INSTANCE: u16 = 0x0005;
pub const VALUES: u16 = 0x0006;
pub const TIME_HR: u16 = 0x0008;
pub const INTERVAL_HR: u16 = 0x0009;
pub const SIGNATURE: u16 = 0x0200;

/// One part: type, length (of the whole part), body.
pub fn part(t: u16, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(body.len() + 4);
    push_part(&mut p, t, body);
    p
}

fn push_part(out: &mut Vec<u8>, t: u16, body: &[u8]) {
    out.extend(t.to_be_bytes());
    out.extend(((body.len() + 4) as u16).to_be_bytes());
    out.extend(body);
}

/// collectd's high-resolution time: 2^-30 seconds.
pub fn cdtime(d: Duration) -> u64 {
    (d.as_secs_f64() * (1u64 << 30) as f64) as u64
}

/// Now, in collectd's high-resolution time.
pub fn cdtime_now() -> u64 {
    cdtime(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
}

/// Load-generator traffic: `load-gen/load/gauge-i<k>`, host, plugin, type, time and interval
/// (1 s) once, then `per_datagram` instance + gauge pairs numbered from `seq * per_datagram`.
pub fn load_datagram(seq: u64, per_datagram: u64) -> Datagram {
    let mut d = Datagram::default();
    d.string(HOST, "load-gen")
        .string(PLUGIN, "load")
        .string(TYPE, "gauge")
        .number(TIME_HR, cdtime_now())
        .number(INTERVAL_HR, cdtime(Duration::from_secs(1)));
    for i in 0..per_datagram {
        d.string(TYPE_INSTANCE, &format!("i{i}"))
            .gauge((seq * per_datagram + i) as f64);
    }
    d
}

/// A datagram built part by part.
#[derive(Default)]
pub struct Datagram(Vec<u8>);

impl Datagram {
    /// A NUL-terminated string part (host, plugin, type, instances).
    pub fn string(&mut self, t: u16, s: &str) -> &mut Self {
        let mut body = s.as_bytes().to_vec();
        body.push(0);
        push_part(&mut self.0, t, &body);
        self
    }

    /// A 64-bit number part (times, intervals).
    pub fn number(&mut self, t: u16, n: u64) -> &mut Self {
        push_part(&mut self.0, t, &n.to_be_bytes());
        self
    }

    /// A values part of one gauge: this dispatches a value list.
    pub fn gauge(&mut self, v: f64) -> &mut Self {
        let mut body = 1u16.to_be_bytes().to_vec();
        body.push(1);
        body.extend(v.to_le_bytes());
        push_part(&mut self.0, VALUES, &body);
        self
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}
