//! `loadgen plot`: one small panel per scenario, uring-chat solid beside Redis dashed.

use loadgen::plot::{self, Panel, Series};

fn spectrum(scale: f64) -> Vec<[f64; 2]> {
    [0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]
        .iter()
        .enumerate()
        .map(|(i, &p)| [p, scale * (i + 1) as f64])
        .collect()
}

fn series(server: &str, scale: f64) -> Series {
    Series {
        label: server.into(),
        points: spectrum(scale),
        colour: usize::from(server == "redis"),
        dashed: server == "redis",
    }
}

#[test]
fn one_panel_per_scenario_with_shared_axes_and_one_legend() {
    let panels = [
        Panel {
            title: "broadcast-c10000-r100".into(),
            series: vec![series("uring-chat", 1_000.0), series("redis", 2_000.0)],
        },
        Panel {
            title: "rooms-c10000-n1000-r10000-tick0".into(),
            series: vec![series("uring-chat", 30.0), series("redis", 3_000.0)],
        },
    ];
    let svg = plot::render_panels("latency <&>", &panels);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("latency &lt;&amp;&gt;"), "the overall title");
    assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 2);
    assert_eq!(svg.matches(r#"class="panel-title""#).count(), 2);
    assert!(svg.contains(">broadcast-c10000-r100<"));
    assert!(svg.contains(">rooms-c10000-n1000-r10000-tick0<"));
    assert_eq!(svg.matches("<path ").count(), 4, "one line per run");
    // Both Redis lines dashed, plus the one legend entry; uring-chat solid.
    assert_eq!(svg.matches("stroke-dasharray").count(), 3);
    assert_eq!(svg.matches(">uring-chat<").count(), 1, "legend once");
    assert_eq!(svg.matches(">redis<").count(), 1, "legend once");
    // Shared y range (30 µs .. 21 ms: 10 µs to 100 ms), labelled once per row, not per panel.
    assert_eq!(svg.matches(">10 µs<").count(), 1);
    assert_eq!(svg.matches(">100 ms<").count(), 1);
    assert!(!svg.contains(">1 s<"));
    // Shared x axis: every panel starts at 0%.
    assert_eq!(svg.matches(">0%<").count(), 2);
    // Deterministic.
    assert_eq!(svg, plot::render_panels("latency <&>", &panels));
}

#[test]
fn reports_group_by_scenario_and_unknown_names_stand_alone() {
    assert_eq!(
        plot::scenario_of("uring-chat-broadcast-c10000-r100"),
        ("broadcast-c10000-r100", Some("uring-chat"))
    );
    assert_eq!(
        plot::scenario_of("redis-broadcast-c10000-r100"),
        ("broadcast-c10000-r100", Some("redis"))
    );
    assert_eq!(plot::scenario_of("my-run"), ("my-run", None));
    assert_eq!(plot::scenario_of("redis"), ("redis", None));

    let dir = std::env::temp_dir().join(format!("loadgen-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = |name: &str, protocol: &str| {
        let path = dir.join(name);
        let json =
            serde_json::json!({ "protocol": protocol, "rate": 100.0, "spectrum": spectrum(1.0) });
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };
    let paths = [
        report("redis-a.json", "redis"),
        report("redis-b.json", "redis"),
        report("uring-chat-a.json", "uring-chat"),
        report("uring-chat-b.json", "uring-chat"),
        report("other.json", "uring-chat"),
    ];
    let panels = plot::load_reports(&paths).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let titles: Vec<&str> = panels.iter().map(|p| p.title.as_str()).collect();
    assert_eq!(titles, ["a", "b", "other"]);
    for panel in &panels[..2] {
        let lines: Vec<(&str, bool)> = panel
            .series
            .iter()
            .map(|s| (s.label.as_str(), s.dashed))
            .collect();
        assert_eq!(lines, [("uring-chat", false), ("redis", true)]);
        assert_ne!(panel.series[0].colour, panel.series[1].colour);
    }
    assert_eq!(panels[2].series.len(), 1);

    let svg = plot::render_panels("t", &panels);
    assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 3);
}

#[test]
fn a_single_run_is_one_untitled_panel() {
    let svg = plot::render("one run", &[series("uring-chat", 10.0)]);
    assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 1);
    assert!(!svg.contains("panel-title"));
    assert!(!svg.contains("stroke-dasharray"));
    for tick in ["0%", "90%", "99%", "99.9%", "99.99%"] {
        assert!(svg.contains(&format!(">{tick}<")), "missing tick {tick}");
    }
}
