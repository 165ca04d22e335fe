//! Tests of the series table: numbering, rates, limits, expiry and index rebuilds.

use super::*;
use crate::event::{Identifier, ValueList};

const S: u64 = 1_000_000_000;

fn table() -> SeriesTable {
    let mut db = TypesDb::default();
    db.add(
        "if_octets rx:DERIVE:0:U, tx:DERIVE:0:U\ncounter value:COUNTER:U:U\n\
            absolute value:ABSOLUTE:0:U\ngauge value:GAUGE:U:U\n",
    );
    SeriesTable::new(Arc::new(db))
}

fn vl(id: &str, time: u64, samples: Vec<Sample>) -> ValueList {
    ValueList {
        identifier: Identifier::parse(id).unwrap(),
        time,
        interval: 10 * S,
        samples,
    }
}

fn rates(o: &Observed) -> Vec<Option<f64>> {
    o.obs.values.iter().map(|v| v.rate).collect()
}

#[test]
fn numbers_series_and_computes_rates() {
    let t = table();
    let a = t
        .observe(
            &vl(
                "h/interface-lo/if_octets",
                10 * S,
                vec![Sample::Derive(100), Sample::Derive(5)],
            ),
            t.now(),
        )
        .unwrap();
    assert_eq!(a.obs.series, 0);
    assert_eq!(&*a.key, "h/interface-lo/if_octets");
    assert_eq!(rates(&a), vec![None, None]);
    let b = t
        .observe(
            &vl(
                "h/interface-lo/if_octets",
                20 * S,
                vec![Sample::Derive(200), Sample::Derive(0)],
            ),
            t.now(),
        )
        .unwrap();
    assert_eq!(b.obs.series, 0);
    assert_eq!(rates(&b), vec![Some(10.0), Some(-0.5)]);
    assert_eq!(t.info(0).unwrap().ds_names, vec!["rx", "tx"]);
    assert_eq!(
        t.last_value("h/interface-lo/if_octets").unwrap().list.time,
        20 * S
    );
    let g = t
        .observe(&vl("h/x/gauge", S, vec![Sample::Gauge(1.0)]), t.now())
        .unwrap();
    assert_eq!((g.obs.series, rates(&g)), (1, vec![None]));
    let abs = t
        .observe(&vl("h/x/absolute", S, vec![Sample::Absolute(50)]), t.now())
        .unwrap();
    assert_eq!(rates(&abs), vec![Some(5.0)]);
}

#[test]
fn counter_wraps_like_collectd() {
    let t = table();
    t.observe(
        &vl(
            "h/c/counter",
            10 * S,
            vec![Sample::Counter(u32::MAX as u64 - 9)],
        ),
        t.now(),
    )
    .unwrap();
    let o = t
        .observe(
            &vl("h/c/counter", 20 * S, vec![Sample::Counter(10)]),
            t.now(),
        )
        .unwrap();
    assert_eq!(rates(&o), vec![Some(2.0)]);
    t.observe(
        &vl("h/c2/counter", 10 * S, vec![Sample::Counter(u64::MAX - 9)]),
        t.now(),
    )
    .unwrap();
    let o = t
        .observe(
            &vl("h/c2/counter", 20 * S, vec![Sample::Counter(10)]),
            t.now(),
        )
        .unwrap();
    assert_eq!(rates(&o), vec![Some(2.0)]);
    let o = t
        .observe(
            &vl("h/c2/counter", 20 * S, vec![Sample::Counter(30)]),
            t.now(),
        )
        .unwrap();
    assert_eq!(rates(&o), vec![None], "no time passed, no rate");
}

#[test]
fn rejects_unknown_types_and_wrong_counts() {
    let t = table();
    assert_eq!(
        t.observe(&vl("h/x/nosuch", S, vec![Sample::Gauge(1.0)]), t.now())
            .err(),
        Some(Rejected::UnknownType("nosuch".into()))
    );
    assert!(matches!(
        t.observe(&vl("h/x/if_octets", S, vec![Sample::Derive(1)]), t.now()),
        Err(Rejected::CountMismatch {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(t.is_empty() || t.len() == 1);
}

#[test]
fn the_table_is_bounded_and_refuses_the_far_future() {
    let mut db = TypesDb::default();
    db.add("gauge value:GAUGE:U:U\n");
    let limits = SeriesLimits {
        max_series: 2,
        ..SeriesLimits::default()
    };
    let t = SeriesTable::with_limits(Arc::new(db), limits);
    let now = crate::event::now_ns();
    let g = |id: &str, time| vl(id, time, vec![Sample::Gauge(1.0)]);
    t.observe(&g("a/p/gauge", now), t.now()).unwrap();
    t.observe(&g("b/p/gauge", now), t.now()).unwrap();
    assert_eq!(
        t.observe(&g("c/p/gauge", now), t.now()).err(),
        Some(Rejected::TooManySeries(2))
    );
    // Known series still flow; a little ahead is fine, far ahead is not.
    t.observe(&g("a/p/gauge", now + 15 * S), t.now()).unwrap();
    assert!(matches!(
        t.observe(&g("a/p/gauge", now + 3600 * S), t.now()),
        Err(Rejected::Future {
            max_intervals: 3,
            ..
        })
    ));
    assert_eq!(t.len(), 2);
}

/// `now` as if `secs` seconds had passed since the table was made.
fn later(t: &SeriesTable, secs: u32) -> Now {
    Now {
        tick: secs,
        ..t.now()
    }
}

#[test]
fn silent_series_expire_and_numbers_are_not_reused() {
    let t = table();
    let now = crate::event::now_ns();
    let g = |id: &str| vl(id, now, vec![Sample::Gauge(1.0)]);
    // Interval 10 s, timeout 2 intervals: forgotten once 20 s have passed without a value.
    let a = t.observe(&g("a/p/gauge"), later(&t, 0)).unwrap();
    let b = t.observe(&g("b/p/gauge"), later(&t, 0)).unwrap();
    assert_eq!((a.slot, b.slot), (0, 1));
    t.observe(&g("b/p/gauge"), later(&t, 15)).unwrap();
    assert_eq!(
        t.expire(later(&t, 20)),
        Expired {
            slots: vec![],
            slot_bound: 2
        }
    );
    assert_eq!(
        t.expire(later(&t, 21)),
        Expired {
            slots: vec![0],
            slot_bound: 2
        }
    );
    assert_eq!(t.len(), 1);
    assert!(t.info(a.obs.series).is_none() && t.last_value("a/p/gauge").is_none());
    // A series that comes back is new: a fresh number, in the freed slot.
    let again = t.observe(&g("a/p/gauge"), later(&t, 22)).unwrap();
    assert_eq!(again.slot, 0);
    assert_ne!(again.obs.series, a.obs.series);
    assert_ne!(again.obs.series, b.obs.series);
    // The last slot going frees the table's tail.
    assert_eq!(
        t.expire(later(&t, 40)),
        Expired {
            slots: vec![1],
            slot_bound: 1
        }
    );
    assert_eq!(
        t.expire(later(&t, 60)),
        Expired {
            slots: vec![0],
            slot_bound: 0
        }
    );
    assert!(t.is_empty());
}

#[test]
fn expiry_makes_room_under_the_cap() {
    let mut db = TypesDb::default();
    db.add("gauge value:GAUGE:U:U\n");
    let limits = SeriesLimits {
        max_series: 1,
        ..SeriesLimits::default()
    };
    let t = SeriesTable::with_limits(Arc::new(db), limits);
    let now = crate::event::now_ns();
    let g = |id: &str| vl(id, now, vec![Sample::Gauge(1.0)]);
    t.observe(&g("a/p/gauge"), later(&t, 0)).unwrap();
    assert!(t.observe(&g("b/p/gauge"), later(&t, 1)).is_err());
    t.expire(later(&t, 30));
    t.observe(&g("b/p/gauge"), later(&t, 30)).unwrap();
}

#[test]
fn identifiers_come_back_whole_even_with_dashes_and_slashes() {
    let t = table();
    let identifier = Identifier {
        host: "web-1/a".into(),
        plugin: "my-plugin".into(),
        plugin_instance: "".into(),
        type_: "gauge".into(),
        type_instance: "x-y".into(),
    };
    let list = ValueList {
        identifier: identifier.clone(),
        time: S,
        interval: 10 * S,
        samples: vec![Sample::Gauge(2.0)],
    };
    let o = t.observe(&list, t.now()).unwrap();
    let info = t.info(o.obs.series).unwrap();
    let parts = |i: &wit::Identifier| {
        let i = i.clone();
        [
            i.host,
            i.plugin,
            i.plugin_instance,
            i.type_,
            i.type_instance,
        ]
    };
    assert_eq!(parts(&info.identifier), parts(&(&identifier).into()));
    assert_eq!(info.ds_names, vec!["value"]);
    let last = t.last_value(&identifier.to_string()).unwrap();
    assert_eq!((last.list.series, last.list.time), (o.obs.series, S));
}

#[test]
fn undeclared_types_share_their_fallback_sources() {
    let t = SeriesTable::new(Arc::new(TypesDb::default()));
    let a = t
        .observe(&vl("h/p/x", S, vec![Sample::Gauge(1.0)]), t.now())
        .unwrap();
    let b = t
        .observe(&vl("h/q/y", S, vec![Sample::Gauge(1.0)]), t.now())
        .unwrap();
    let inner = t.inner.read().unwrap();
    let (ea, eb) = (slot(&inner.slots, a.slot), slot(&inner.slots, b.slot));
    assert!(Arc::ptr_eq(&ea.sources, &eb.sources));
}

#[test]
fn indexes_grow_and_shrink_with_the_table() {
    let t = table();
    let now = crate::event::now_ns();
    let g = |i: usize| vl(&format!("h{i}/p/gauge"), now, vec![Sample::Gauge(1.0)]);
    let numbers: Vec<u32> = (0..5000)
        .map(|i| t.observe(&g(i), later(&t, 0)).unwrap().obs.series)
        .collect();
    assert_eq!(t.len(), 5000);
    for (i, &n) in numbers.iter().enumerate() {
        assert_eq!(t.info(n).unwrap().identifier.host, format!("h{i}"));
    }
    // The last ten keep talking; the rest fall silent.
    for i in 4990..5000 {
        t.observe(&g(i), later(&t, 30)).unwrap();
    }
    let expired = t.expire(later(&t, 31));
    assert_eq!(expired.slots.len(), 4990);
    assert_eq!(expired.slot_bound, 5000, "live series keep their slots");
    let inner = t.read();
    assert!(inner.indexes.by_key.capacity() < 2048, "indexes shrank");
    assert_eq!(inner.free.len(), 4990);
    drop(inner);
    for (i, &n) in numbers.iter().enumerate().skip(4990) {
        assert!(t.last_value(&format!("h{i}/p/gauge")).is_some());
        assert!(t.info(n).is_some());
    }
    assert!(t.info(numbers[0]).is_none());
}
