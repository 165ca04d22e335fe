//! How to reach a broker: the URL, credentials and TLS, turned into rumqttc options. Shared by
//! the daemon and `medic send`, so both verify brokers the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::config::{BrokerUrl, MqttProtocol};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Everything needed to open one MQTT session.
#[derive(Debug, Clone)]
pub struct Connect {
    pub url: BrokerUrl,
    pub protocol: MqttProtocol,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    pub keepalive: Duration,
    pub clean_session: bool,
    /// Published retained (QoS 1) by the broker when the connection dies.
    pub last_will: Option<(String, Vec<u8>)>,
    /// Largest message payload medic handles (`mqtt.max_message_size`).
    pub max_message: usize,
}

/// MQTT's own ceiling on a packet (a 4-byte remaining length) plus its fixed header.
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;
/// Room for a topic and properties beside a payload of `max_message` bytes.
const PACKET_OVERHEAD: usize = 64 * 1024;

/// mosquitto's default receive maximum is 20; more in flight and QoS 2 messages are lost.
const INFLIGHT: u16 = 20;

impl Connect {
    /// The daemon's connection, from its `[mqtt]` section: a fixed client id (`medic-<node>`
    /// by default, so a restart resumes the session) and `offline` as the last will.
    pub fn from_config(m: &crate::config::Mqtt, node: &str) -> anyhow::Result<Self> {
        let password = password(m.password.as_ref(), m.password_file.as_deref())?;
        Ok(Self {
            url: m.broker.clone(),
            protocol: m.protocol,
            client_id: m
                .client_id
                .clone()
                .unwrap_or_else(|| format!("medic-{node}")),
            credentials: m
                .username
                .clone()
                .map(|u| (u, password.unwrap_or_default())),
            ca_file: m.ca_file.clone(),
            insecure: m.insecure,
            keepalive: m.keepalive,
            clean_session: m.clean_session,
            last_will: Some((
                crate::config::Mqtt::topic_for(&m.status_topic, node),
                b"offline".to_vec(),
            )),
            max_message: m.max_message_size,
        })
    }

    /// Read the credentials and TLS material now (for `medic check`).
    pub fn check(&self) -> anyhow::Result<()> {
        self.transport().map(drop)
    }

    fn transport(&self) -> anyhow::Result<Option<Transport>> {
        if !self.url.tls {
            return Ok(None);
        }
        let tls = tls_config(self.ca_file.as_deref(), self.insecure)?;
        Ok(Some(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        ))))
    }

    pub fn options_v5(&self) -> anyhow::Result<rumqttc::v5::MqttOptions> {
        use rumqttc::v5::mqttbytes::v5::LastWill as LastWill5;
        let mut o = rumqttc::v5::MqttOptions::new(&self.client_id, &self.url.host, self.url.port);
        o.set_keep_alive(self.keepalive);
        o.set_clean_start(self.clean_session);
        if !self.clean_session {
            // In MQTT 5 a session ends with the connection unless it is given an expiry.
            o.set_session_expiry_interval(Some(u32::MAX));
        }
        o.set_outgoing_inflight_upper_limit(INFLIGHT);
        // Told to the broker in CONNECT: it does not send us anything larger.
        let limit = (self.max_message + PACKET_OVERHEAD).min(MQTT_MAX_PACKET);
        o.set_max_packet_size(Some(limit as u32));
        o.set_manual_acks(true);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        o.set_network_options(network);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user, password);
        }
        if let Some((topic, payload)) = &self.last_will {
            o.set_last_will(LastWill5::new(
                topic,
                payload.clone(),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
        }
        if let Some(transport) = self.transport()? {
            o.set_transport(transport);
        }
        Ok(o)
    }

    pub fn options_v4(&self) -> anyhow::Result<MqttOptions> {
        let mut o = MqttOptions::new(&self.client_id, &self.url.host, self.url.port);
        o.set_keep_alive(self.keepalive);
        o.set_clean_session(self.clean_session);
        o.set_inflight(INFLIGHT);
        // MQTT 3.1.1 cannot tell the broker a limit, and rumqttc drops the connection on an
        // incoming packet over its limit (the broker then redelivers it, for ever): accept any
        // packet MQTT allows, and let the session drop oversized messages after reading them.
        o.set_max_packet_size(MQTT_MAX_PACKET, self.max_message + PACKET_OVERHEAD);
        o.set_manual_acks(true);
        if let Some((user, password)) = &self.credentials {
            o.set_credentials(user, password);
        }
        if let Some((topic, payload)) = &self.last_will {
            o.set_last_will(LastWill::new(
                topic,
                payload.clone(),
                QoS::AtLeastOnce,
                true,
            ));
        }
        if let Some(transport) = self.transport()? {
            o.set_transport(transport);
        }
        Ok(o)
    }
}

/// The password given inline, or the first line of a password file (without the newline).
pub fn password(inline: Option<&String>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Some(p) = inline {
        return Ok(Some(p.clone()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    Ok(Some(text.lines().next().unwrap_or_default().to_string()))
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// rustls needs one process-wide crypto provider; ring is the one this build carries.
fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Verify the broker against `ca_file`, or the system roots; skip verification only when
/// `insecure` says so.
pub fn tls_config(ca_file: Option<&Path>, insecure: bool) -> anyhow::Result<ClientConfig> {
    install_provider();
    let builder = ClientConfig::builder();
    if insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification::new()))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("CA file {} is not PEM", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            anyhow::ensure!(
                added > 0,
                "CA file {} holds no usable certificate",
                path.display()
            );
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(
                added > 0,
                "no system CA certificates found ({:?}); set mqtt.ca_file",
                found.errors
            );
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `insecure = true`: accept any certificate, still checking handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl NoVerification {
    fn new() -> Self {
        Self(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1884, false));
        let u = BrokerUrl::parse("mqtts://broker.example").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 8883, true)
        );
        let u = BrokerUrl::parse("mqtt://[::1]:2000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 2000));
        assert!(BrokerUrl::parse("localhost:1883").is_err());
        assert!(BrokerUrl::parse("http://x").unwrap_err().contains("scheme"));
        assert!(BrokerUrl::parse("mqtt://u:p@x").is_err());
        assert!(
            BrokerUrl::parse("mqtt://x:port")
                .unwrap_err()
                .contains("port")
        );
    }

    #[test]
    fn a_missing_ca_file_is_a_clear_error() {
        let err = tls_config(Some(Path::new("/nonexistent/ca.pem")), false).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
    }
}
