//! Unit tests of `protocol`.

use super::*;
use serde_json::Value as Json;

use crate::test_fixtures::bytes as fixture;

fn creds(password: &str) -> Credentials {
    Credentials::parse(&format!(
        "# comment\n\nfixture-user: {password}\nother: x\n"
    ))
}

fn decode_all(
    bytes: &[u8],
    level: SecurityLevel,
    c: &Credentials,
) -> Result<Vec<Decoded>, DecodeError> {
    let mut out = Vec::new();
    decode(bytes, level, c, &mut out).map(|()| out)
}

/// The fixture's expected JSON, in the form the fixtures use.
fn to_json(d: &Decoded) -> Json {
    let f = match &d.item {
        Item::Values { fields, .. } | Item::Notification { fields, .. } => fields,
    };
    let mut j = serde_json::json!({
        "security": d.security.as_str(),
        "host": f.host, "plugin": f.plugin, "plugin_instance": f.plugin_instance,
        "type": f.type_, "type_instance": f.type_instance, "time_hr": f.time_hr,
    });
    match &d.item {
        Item::Values { samples, .. } => {
            j["kind"] = "values".into();
            j["interval_hr"] = f.interval_hr.into();
            j["values"] = samples
                .iter()
                .map(|s| match *s {
                    Sample::Gauge(g) if g.is_nan() => {
                        serde_json::json!({"ds_type": "gauge", "value": "NaN"})
                    }
                    Sample::Gauge(g) => serde_json::json!({"ds_type": "gauge", "value": g}),
                    Sample::Derive(v) => serde_json::json!({"ds_type": "derive", "value": v}),
                    Sample::Counter(v) => serde_json::json!({"ds_type": "counter", "value": v}),
                    Sample::Absolute(v) => {
                        serde_json::json!({"ds_type": "absolute", "value": v})
                    }
                })
                .collect();
        }
        Item::Notification {
            severity, message, ..
        } => {
            j["kind"] = "notification".into();
            j["severity"] = (*severity).into();
            j["message"] = message.as_str().into();
        }
    }
    j
}

#[test]
fn every_fixture_decodes_to_its_expected_json() {
    let cases = [
        ("plain", SecurityLevel::None),
        ("plain-small", SecurityLevel::None),
        ("alltypes", SecurityLevel::None),
        ("notif-okay", SecurityLevel::None),
        ("notif-failure-nohost", SecurityLevel::None),
        ("sign", SecurityLevel::Sign),
        ("encrypt", SecurityLevel::Encrypt),
    ];
    let c = creds("fixture-secret");
    for (name, level) in cases {
        let got = decode_all(&fixture(&format!("{name}.bin")), level, &c).unwrap();
        let text = crate::test_fixtures::text(&format!("{name}.expected.json"));
        let expected: Vec<Json> = serde_json::from_str(&text).unwrap();
        assert_eq!(got.len(), expected.len(), "{name}");
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            let mut e = e.clone();
            // `time` is derived from `time_hr`; compare the exact field.
            e.as_object_mut().unwrap().remove("time");
            assert_eq!(to_json(g), e, "{name} item {i}");
        }
    }
}

#[test]
fn security_levels_apply_as_collectd_applies_them() {
    let (plain, sign, encrypt) = (
        fixture("plain.bin"),
        fixture("sign.bin"),
        fixture("encrypt.bin"),
    );
    let good = creds("fixture-secret");
    let wrong = creds("wrong");
    use SecurityLevel::*;
    // none: plain and signed (unchecked) pass, encrypted is dropped.
    assert_eq!(
        decode_all(&plain, None, &Credentials::default())
            .unwrap()
            .len(),
        29
    );
    let s = decode_all(&sign, None, &Credentials::default()).unwrap();
    assert!(s.len() == 28 && s.iter().all(|d| d.security == Security::None));
    assert_eq!(
        decode_all(&encrypt, None, &good),
        Err(DecodeError::EncryptedAtNone)
    );
    // sign: plain refused, signature checked, encrypted decrypted.
    assert_eq!(
        decode_all(&plain, Sign, &good),
        Err(DecodeError::Unsigned(Sign))
    );
    assert_eq!(
        decode_all(&sign, Sign, &wrong),
        Err(DecodeError::BadSignature("fixture-user".into()))
    );
    assert_eq!(
        decode_all(&sign, Sign, &Credentials::default()),
        Err(DecodeError::UnknownUser("fixture-user".into()))
    );
    assert_eq!(decode_all(&encrypt, Sign, &good).unwrap().len(), 29);
    // encrypt: only encrypted data.
    assert_eq!(
        decode_all(&sign, Encrypt, &good),
        Err(DecodeError::Unsigned(Encrypt))
    );
    assert_eq!(
        decode_all(&encrypt, Encrypt, &wrong),
        Err(DecodeError::BadChecksum("fixture-user".into()))
    );
}

fn part(t: u16, body: &[u8]) -> Vec<u8> {
    let mut p = t.to_be_bytes().to_vec();
    p.extend(((body.len() + 4) as u16).to_be_bytes());
    p.extend(body);
    p
}

fn decode_none(bytes: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
    decode_all(bytes, SecurityLevel::None, &Credentials::default())
}

#[test]
fn every_part_type_and_field_carry_over() {
    let mut d = Vec::new();
    d.extend(part(HOST, b"h\0"));
    d.extend(part(TIME, &10u64.to_be_bytes()));
    d.extend(part(INTERVAL, &2u64.to_be_bytes()));
    d.extend(part(PLUGIN, b"p\0"));
    d.extend(part(PLUGIN_INSTANCE, b"pi\0"));
    d.extend(part(TYPE, b"t\0"));
    d.extend(part(TYPE_INSTANCE, b"\0"));
    d.extend(part(0x7777, b"unknown parts are skipped"));
    let mut values = 4u16.to_be_bytes().to_vec();
    values.extend([0, 1, 2, 3]);
    values.extend(7u64.to_be_bytes());
    values.extend(1.5f64.to_le_bytes());
    values.extend((-3i64).to_be_bytes());
    values.extend(9u64.to_be_bytes());
    d.extend(part(VALUES, &values));
    d.extend(part(TIME_HR, &(5u64 << 30).to_be_bytes()));
    d.extend(part(INTERVAL_HR, &(1u64 << 29).to_be_bytes()));
    d.extend(part(VALUES, &0u16.to_be_bytes()));
    d.extend(part(SEVERITY, &2u64.to_be_bytes()));
    d.extend(part(MESSAGE, b"disk full\0"));
    let out = decode_none(&d).unwrap();
    assert_eq!(out.len(), 3);
    let Item::Values { fields, samples } = &out[0].item else {
        panic!()
    };
    assert_eq!(
        (
            fields.host.as_str(),
            fields.plugin_instance.as_str(),
            fields.type_instance.as_str()
        ),
        ("h", "pi", "")
    );
    assert_eq!((fields.time_hr, fields.interval_hr), (10 << 30, 2 << 30));
    assert_eq!(
        samples,
        &vec![
            Sample::Counter(7),
            Sample::Gauge(1.5),
            Sample::Derive(-3),
            Sample::Absolute(9)
        ]
    );
    let Item::Values { fields, samples } = &out[1].item else {
        panic!()
    };
    assert!(
        samples.is_empty(),
        "a 0-value list decodes (and is dropped later by types.db)"
    );
    assert_eq!((fields.time_hr, fields.interval_hr), (5 << 30, 1 << 29));
    assert!(
        matches!(&out[2].item, Item::Notification { severity: 2, message, .. } if message == "disk full")
    );
}

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    let host = part(HOST, b"h\0");
    assert_eq!(
        decode_none(&host[..3]),
        Err(DecodeError::TruncatedHeader { offset: 0 })
    );
    let mut lying = host.clone();
    lying[3] = 200;
    assert!(matches!(
        decode_none(&lying),
        Err(DecodeError::LengthTooLong {
            length: 200,
            left: 6,
            ..
        })
    ));
    lying[3] = 2;
    assert!(matches!(
        decode_none(&lying),
        Err(DecodeError::BadLength { length: 2, .. })
    ));
    assert!(matches!(
        decode_none(&part(HOST, b"no nul")),
        Err(DecodeError::BadString { .. })
    ));
    assert!(matches!(
        decode_none(&part(HOST, b"")),
        Err(DecodeError::BadString { .. })
    ));
    assert!(matches!(
        decode_none(&part(TIME, &[1, 2, 3])),
        Err(DecodeError::BadLength { .. })
    ));
    let mut v = 2u16.to_be_bytes().to_vec();
    v.extend([1, 1]);
    v.extend(1.0f64.to_le_bytes());
    assert!(
        matches!(
            decode_none(&part(VALUES, &v)),
            Err(DecodeError::BadLength { .. })
        ),
        "count lies"
    );
    let mut v = 1u16.to_be_bytes().to_vec();
    v.push(9);
    v.extend(1.0f64.to_le_bytes());
    assert_eq!(
        decode_none(&part(VALUES, &v)),
        Err(DecodeError::BadDsType {
            offset: 0,
            ds_type: 9
        })
    );
    // Items before the error are kept.
    let mut out = Vec::new();
    let mut d = part(TYPE, b"t\0");
    d.extend(part(VALUES, &0u16.to_be_bytes()));
    d.extend([0, 1]);
    assert!(decode(&d, SecurityLevel::None, &Credentials::default(), &mut out).is_err());
    assert_eq!(out.len(), 1);
    // Truncated signature and encryption parts.
    assert!(
        decode_all(
            &part(SIGN_SHA256, &[0; 10]),
            SecurityLevel::Sign,
            &creds("x")
        )
        .is_err()
    );
    assert!(
        decode_all(
            &part(ENCR_AES256, &[0, 50, 1]),
            SecurityLevel::Encrypt,
            &creds("x")
        )
        .is_err()
    );
    let enc = fixture("encrypt.bin");
    for cut in [1, 7, 30, 100, enc.len() - 1] {
        assert!(
            decode_all(
                &enc[..cut],
                SecurityLevel::Encrypt,
                &creds("fixture-secret")
            )
            .is_err()
        );
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
        for level in [SecurityLevel::None, SecurityLevel::Sign, SecurityLevel::Encrypt] {
            let mut out = Vec::new();
            let _ = decode(&bytes, level, &creds("fixture-secret"), &mut out);
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(i in 0usize..1378, b in proptest::num::u8::ANY, cut in 0usize..1400) {
        for name in ["plain.bin", "sign.bin", "encrypt.bin", "alltypes.bin"] {
            let mut bytes = fixture(name);
            let i = i % bytes.len();
            bytes[i] = b;
            bytes.truncate(cut.max(1));
            for level in [SecurityLevel::None, SecurityLevel::Sign, SecurityLevel::Encrypt] {
                let mut out = Vec::new();
                let _ = decode(&bytes, level, &creds("fixture-secret"), &mut out);
            }
        }
    }
}

/// One datagram must never drive the decoder deep or wide: a signature inside a signature (1 000
/// of them fit in one datagram) is refused at the second, at every security level, and only
/// one level of recursion is ever taken.
#[test]
fn nested_security_parts_are_refused_not_followed() {
    let mut sign = vec![0u8; 32];
    sign.extend(b"fixture-user");
    let one = part(SIGN_SHA256, &sign);
    let mut d = Vec::new();
    while d.len() + one.len() <= 65_507 {
        d.extend(&one);
    }
    assert!(d.len() > 60_000, "{}", d.len());
    let err = decode_none(&d).unwrap_err();
    assert_eq!(err, DecodeError::Nested { offset: one.len() });
    // The same nested inside an (unverified, at level none) encryption layer: one layer only.
    let c = creds("fixture-secret");
    for level in [SecurityLevel::Sign, SecurityLevel::Encrypt] {
        let mut out = Vec::new();
        assert!(decode(&d, level, &c, &mut out).is_err());
        assert!(out.is_empty());
    }
}

#[test]
fn strings_and_value_counts_are_capped_like_collectd() {
    let mut long = vec![b'h'; MAX_NAME_LEN];
    long.push(0);
    let mut ok = part(HOST, &long);
    ok.extend(part(PLUGIN, b"p\0"));
    ok.extend(part(TYPE, b"t\0"));
    ok.extend(part(VALUES, &[0, 0]));
    assert_eq!(
        decode_none(&ok).unwrap().len(),
        1,
        "127 bytes is collectd's limit"
    );
    long.insert(0, b'h');
    assert_eq!(
        decode_none(&part(HOST, &long)),
        Err(DecodeError::TooLong {
            part: HOST,
            offset: 0,
            length: MAX_NAME_LEN + 1,
            max: MAX_NAME_LEN
        })
    );
    let mut message = vec![b'm'; MAX_MESSAGE_LEN + 1];
    message.push(0);
    assert!(matches!(
        decode_none(&part(MESSAGE, &message)),
        Err(DecodeError::TooLong { part: MESSAGE, .. })
    ));
    let count = MAX_VALUES + 1;
    let mut values = (count as u16).to_be_bytes().to_vec();
    values.extend(std::iter::repeat_n(1u8, count));
    values.extend(std::iter::repeat_n(0u8, count * 8));
    assert_eq!(
        decode_none(&part(VALUES, &values)),
        Err(DecodeError::TooManyValues { offset: 0, count })
    );
}

/// A value list as collectd's sender writes it: every identifier part, high-resolution time
/// and interval, then the values (gauges little-endian, the rest big-endian).
fn encode(fields: &Fields, samples: &[Sample]) -> Vec<u8> {
    let string = |t: u16, s: &str| {
        let mut body = s.as_bytes().to_vec();
        body.push(0);
        part(t, &body)
    };
    let mut d = string(HOST, &fields.host);
    d.extend(part(TIME_HR, &fields.time_hr.to_be_bytes()));
    d.extend(part(INTERVAL_HR, &fields.interval_hr.to_be_bytes()));
    d.extend(string(PLUGIN, &fields.plugin));
    d.extend(string(PLUGIN_INSTANCE, &fields.plugin_instance));
    d.extend(string(TYPE, &fields.type_));
    d.extend(string(TYPE_INSTANCE, &fields.type_instance));
    let mut values = (samples.len() as u16).to_be_bytes().to_vec();
    let (types, data): (Vec<u8>, Vec<[u8; 8]>) = samples
        .iter()
        .map(|s| match *s {
            Sample::Counter(v) => (0, v.to_be_bytes()),
            Sample::Gauge(v) => (1, v.to_le_bytes()),
            Sample::Derive(v) => (2, v.to_be_bytes()),
            Sample::Absolute(v) => (3, v.to_be_bytes()),
        })
        .unzip();
    values.extend(types);
    values.extend(data.concat());
    d.extend(part(VALUES, &values));
    d
}

fn name() -> impl proptest::strategy::Strategy<Value = String> {
    // Any text collectd could carry: no NUL, at most 127 bytes (31 chars of up to 4 bytes).
    proptest::string::string_regex("[^\u{0}]{0,31}").unwrap()
}

fn sample() -> impl proptest::strategy::Strategy<Value = Sample> {
    use proptest::prelude::*;
    prop_oneof![
        any::<u64>().prop_map(Sample::Counter),
        any::<f64>()
            .prop_filter("NaN never equals itself", |v| !v.is_nan())
            .prop_map(Sample::Gauge),
        any::<i64>().prop_map(Sample::Derive),
        any::<u64>().prop_map(Sample::Absolute),
    ]
}

proptest::proptest! {
    /// Whatever a sender encodes (within collectd's bounds) decodes to the same value list.
    #[test]
    fn encode_then_decode_gives_back_the_value_list(
        host in name(), plugin in name(), plugin_instance in name(),
        type_ in name(), type_instance in name(),
        time_hr in proptest::num::u64::ANY, interval_hr in proptest::num::u64::ANY,
        samples in proptest::collection::vec(sample(), 0..=MAX_VALUES),
    ) {
        let fields = Fields {
            host, plugin, plugin_instance, type_, type_instance, time_hr, interval_hr,
        };
        let datagram = encode(&fields, &samples);
        proptest::prop_assume!(datagram.len() <= 65_507);
        let decoded = decode_none(&datagram).unwrap();
        proptest::prop_assert_eq!(decoded.len(), 1);
        proptest::prop_assert_eq!(
            &decoded[0].item,
            &Item::Values { fields: fields.clone(), samples: samples.clone() }
        );
    }
}

#[test]
fn items_become_records_only_when_collectd_would_dispatch_them() {
    let fields = |host: &str| Fields {
        host: host.into(),
        plugin: "load".into(),
        type_: "load".into(),
        time_hr: 0,
        interval_hr: 10 << 30,
        ..Fields::default()
    };
    let values = Item::Values {
        fields: fields("web"),
        samples: vec![Sample::Gauge(1.0)],
    };
    let Ok(Record::Values(list)) = values.into_record(42) else {
        panic!("a value list")
    };
    assert_eq!((list.time, list.interval), (42, 10_000_000_000));
    let nameless = Item::Values {
        fields: fields(""),
        samples: vec![Sample::Gauge(1.0)],
    };
    assert_eq!(
        nameless.into_record(42).unwrap_err(),
        "value list without host, plugin or type: `/load/load`"
    );
    let notification = |severity| Item::Notification {
        fields: fields(""),
        severity,
        message: "disk full".into(),
    };
    let Ok(Record::Notification(n)) = notification(2).into_record(42) else {
        panic!("a notification (collectd sends some without a host)")
    };
    assert_eq!(n.severity, Severity::Warning);
    assert_eq!(
        notification(3).into_record(42).unwrap_err(),
        "notification with unknown severity 3"
    );
}
