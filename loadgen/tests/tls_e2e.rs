//! `--tls` against the REAL uring-chat server started in-process with a certificate made in the
//! test (rcgen): broadcast, direct, and mixed traffic with churn (every churned login a new TLS
//! handshake) with nothing lost and the report saying `tls: true`; and the clear errors of a
//! wrong CA, a wrong server name and options that do not go together.

mod common;

use common::pki::Pki;

/// The real server with TLS on its chat port, two cores, no flood limit.
fn start_tls_server(pki: &Pki) -> uring_chat::server::Server {
    let config = uring_chat::config::Config {
        host: "127.0.0.1".into(),
        port: 0,
        http_port: None,
        cores: 2,
        rate_limit: 0,
        tls: Some(pki.files()),
        ..Default::default()
    };
    uring_chat::server::Server::start(config).expect("uring-chat starts")
}

fn tls_run(port: u16, pki: &Pki, extra: &[&str]) -> Result<loadgen::Report, loadgen::Error> {
    let ca = pki.ca_file();
    let tls = ["--tls", "--tls-ca", ca.as_str()];
    loadgen::run(&common::small_run(port, &[&tls[..], extra].concat()))
}

#[test]
fn loadgen_over_tls_against_the_real_server() {
    let pki = Pki::new("e2e");
    let server = start_tls_server(&pki);
    let port = server.local_addr().port();

    let b = tls_run(port, &pki, &["--senders", "2"]).expect("TLS run");
    assert!(b.tls, "{}", b.text());
    assert_eq!(b.connect.connected, 50, "{}", b.text());
    assert_eq!(b.messages_sent, 50);
    assert_eq!(b.deliveries_expected, 50 * 49);
    assert_eq!(b.received, b.deliveries_expected, "{}", b.text());
    assert_eq!(
        (b.lost, b.duplicated, b.out_of_order),
        (0, 0, 0),
        "{}",
        b.text()
    );
    assert!(b.server_errors.is_empty(), "{:?}", b.server_errors);
    let errs = common::validate(&serde_json::to_value(&b).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    // The certificate names localhost too: verifying that name instead of the address works.
    let d = tls_run(
        port,
        &pki,
        &[
            "--tls-server-name",
            "localhost",
            "--pattern",
            "direct",
            "--senders",
            "3",
            "--rate",
            "100",
        ],
    )
    .expect("TLS direct run");
    assert_eq!(d.deliveries_expected, 100, "{}", d.text());
    assert_eq!((d.received, d.lost), (100, 0), "{}", d.text());

    // 100 clients: 10 broadcasts/s, 200 direct messages/s each its own write from every client
    // (the sender thread and the receive tasks share each connection's TLS session), 10 extra
    // clients a second logging out and back in with a new handshake.
    let m = tls_run(
        port,
        &pki,
        &[
            "--clients",
            "100",
            "--pattern",
            "mixed",
            "--broadcast-rate",
            "10",
            "--dm-rate",
            "200",
            "--churn",
            "10",
        ],
    )
    .expect("TLS mixed run");
    assert_eq!(m.connect.connected, 100, "{}", m.text());
    common::assert_kinds_whole(&m, true);
    let c = m.churn.as_ref().expect("churn section");
    assert!(c.cycles >= 5 && c.failed == 0, "{}", m.text());
    assert!(m.server_errors.is_empty(), "{:?}", m.server_errors);

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

/// The error of a run that got nobody in.
fn refused(r: Result<loadgen::Report, loadgen::Error>) -> String {
    match r {
        Ok(report) => panic!("the run should have failed:\n{}", report.text()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tls_mistakes_get_clear_errors() {
    let pki = Pki::new("mistakes");
    let other = Pki::new("other-ca");
    let server = start_tls_server(&pki);
    let port = server.local_addr().port();
    let few = ["--clients", "4", "--connect-timeout", "5s"];

    // A CA that did not sign the server's certificate.
    let e = refused(tls_run(port, &other, &few));
    assert!(e.contains("UnknownIssuer") && e.contains("--tls-ca"), "{e}");
    // A name the certificate does not carry.
    let e = refused(tls_run(
        port,
        &pki,
        &[&few[..], &["--tls-server-name", "chat.example"]].concat(),
    ));
    assert!(
        e.contains("not valid for name") && e.contains("--tls-server-name"),
        "{e}"
    );
    // Plain text to a TLS port: the server answers no connect_response.
    let e = refused(loadgen::run(&common::small_run(port, &few)));
    assert!(e.contains("sender connection 0"), "{e}");

    // Options: --tls needs a CA, the CA file must hold one, no TLS for Redis.
    let parse = |args: &[&str]| {
        <loadgen::Options as clap::Parser>::try_parse_from([&["loadgen"], args].concat())
    };
    assert!(parse(&["--tls"]).is_err());
    assert!(parse(&["--tls-ca", "ca.pem"]).is_err());
    let empty = pki.dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = refused(loadgen::run(
        &parse(&["--tls", "--tls-ca", empty.to_str().unwrap()]).unwrap(),
    ));
    assert!(e.contains("no PEM certificate"), "{e}");
    let ca = pki.ca_file();
    let redis = parse(&["--tls", "--tls-ca", &ca, "--protocol", "redis"]).unwrap();
    assert!(refused(loadgen::run(&redis)).contains("not with --protocol redis"));

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}
