//! The report struct, the JSON Schema file and docs/LOADGEN.md stay in step: a report with every
//! optional part filled validates against the schema (which forbids unknown fields), and every
//! field the schema names is documented.

mod common;

use loadgen::report::{ChurnReport, Fanout, FindMax, HostReport, Kinds, Report, Step};

#[test]
fn every_report_field_is_in_the_schema_and_the_docs() {
    let schema = common::report_schema();
    let host = HostReport {
        target: "127.0.0.1:8080".into(),
        ..Default::default()
    };
    let mut r = Report {
        schema: loadgen::report::SCHEMA.into(),
        protocol: "uring-chat".into(),
        transport: "ws".into(),
        tls: true,
        pattern: "broadcast".into(),
        hosts: vec![host.clone(), host.clone()],
        fanout_us: Some(Fanout::default()),
        find_max: Some(FindMax {
            steps: vec![Step::default()],
            ..Default::default()
        }),
        spectrum: vec![[50.0, 10.0], [100.0, 20.0]],
        ..Default::default()
    };
    r.rooms = 1000;
    r.rooms_per_client = 2;
    r.order_violations = Some(0);
    r.cpu.server_cpu_s = Some(1.0);
    r.cpu.server_ns_per_delivery = Some(1.0);
    r.cpu.loadgen_ns_per_delivery = Some(1.0);
    r.connect.first_error = Some("x".into());
    r.server_errors.insert("SLOW_CONSUMER".into(), 3);
    r.thresholds.max_p99_us = Some(1.0);
    r.thresholds.max_loss = Some("0".into());
    r.kinds = Some(Kinds::default());
    r.churn = Some(ChurnReport {
        first_error: Some("x".into()),
        ..Default::default()
    });
    let errs = common::validate(&serde_json::to_value(&r).unwrap(), &schema);
    assert!(errs.is_empty(), "{errs:#?}");
    // And with every optional part empty.
    let errs = common::validate(
        &serde_json::to_value(Report {
            schema: loadgen::report::SCHEMA.into(),
            protocol: "redis".into(),
            transport: "tcp".into(),
            pattern: "direct".into(),
            hosts: vec![host],
            order_violations: None,
            ..Default::default()
        })
        .unwrap(),
        &schema,
    );
    assert!(errs.is_empty(), "{errs:#?}");

    // The validator itself rejects what it should.
    // A rooms run names its pattern "rooms", a mixed one "mixed".
    for p in ["rooms", "mixed"] {
        r.pattern = p.into();
        let errs = common::validate(&serde_json::to_value(&r).unwrap(), &schema);
        assert!(errs.is_empty(), "{errs:#?}");
    }

    let mut bad = serde_json::to_value(&r).unwrap();
    bad["received"] = serde_json::json!("many");
    bad["surprise"] = serde_json::json!(1);
    bad.as_object_mut().unwrap().remove("lost");
    assert_eq!(common::validate(&bad, &schema).len(), 3);

    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/LOADGEN.md"))
        .expect("docs/LOADGEN.md");
    for name in common::schema_property_names(&schema) {
        assert!(
            docs.contains(&format!("`{name}"))
                || docs.contains(&format!(".{name}"))
                || docs.contains(&format!("{name}`")),
            "docs/LOADGEN.md does not mention report field {name}"
        );
    }
}
