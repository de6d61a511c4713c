//! The benchmark's figures as the table `lifeboat bench` prints (without `--json`): one line
//! per phase with its target, and for a `--smoke` run the same lines without targets.

use serde_json::Value;

use super::retention;

pub(super) fn table(f: &Value) -> String {
    if f.get("retention").is_some() {
        return retention::table(&f["retention"]);
    }
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let postgres = f["store_kind"] == "postgres";
    // `--compare-only`: accept and delivery only (on one instance and two).
    let full = f["compare_only"] != true;
    // The targets of the issue for each store on this kind of machine (PostgreSQL's server
    // shares the two cores with the gateway and the load generator).
    let (accept_target, delivery_target) = if postgres {
        ("(target >= 12000/s)", "(target >= 6000/s)")
    } else {
        (
            "(target >= 20000/s and >= 0.5 x no-op)",
            "(target >= 10000/s)",
        )
    };
    let mut out = String::new();
    if f.get("accept").is_none() && f.get("accept_paced").is_some() {
        // `--dispatching-only`.
        return dispatching_lines(f);
    }
    out.push_str(&format!(
        "Lifeboat benchmark ({} cores, {} clients, store: {}{})\n\n",
        f["machine"]["cores"],
        f["clients"],
        if postgres { "PostgreSQL" } else { "sled" },
        match f["instance_cpu"].as_f64() {
            Some(cores) => format!(", each gateway capped at {cores} cores"),
            None => String::new(),
        }
    ));
    out.push_str(&format!(
        "no-op     {:>9.0}/s   p50 {:>7.2} ms  p99 {:>7.2} ms   GET /healthz, the HTTP ceiling\n",
        num(&f["noop"]["per_sec"]),
        num(&f["noop"]["p50_ms"]),
        num(&f["noop"]["p99_ms"])
    ));
    out.push_str(&format!(
        "accept    {:>9.0}/s   p50 {:>7.2} ms  p99 {:>7.2} ms   {:.2} x no-op, {} errors   {accept_target}\n",
        num(&f["accept"]["per_sec"]), num(&f["accept"]["p50_ms"]), num(&f["accept"]["p99_ms"]), num(&f["accept"]["ratio_to_noop"]), f["accept"]["errors"]
    ));
    if f.get("accept_paced").is_some() {
        out.push_str(&dispatching_lines(f));
    }
    out.push_str(&format!(
        "cpu       per request, gateway: no-op {:.1} us, accept {:.1} us; load generator: {:.1} us, {:.1} us\n",
        num(&f["noop"]["gateway_cpu_us"]), num(&f["accept"]["gateway_cpu_us"]), num(&f["noop"]["generator_cpu_us"]), num(&f["accept"]["generator_cpu_us"])
    ));
    out.push_str(&format!(
        "delivery  {:>9.0}/s   202->provider p50 {:.2} ms  p99 {:.2} ms   {} notifications, gateway CPU {:.1} us each (accept, send, simulated provider)   {delivery_target}\n",
        num(&f["delivery"]["per_sec"]), num(&f["delivery"]["accept_to_provider_p50_ms"]), num(&f["delivery"]["accept_to_provider_p99_ms"]), f["delivery"]["notifications"], num(&f["delivery"]["gateway_cpu_us"])
    ));
    if full {
        out.push_str(&format!(
            "backlog   {:>9.0}/s   delivery alone: the restarted gateway draining its queue, gateway CPU {:.1} us per send (send, simulated provider)\n",
            num(&f["backlog"]["per_sec"]), num(&f["backlog"]["gateway_cpu_us"])
        ));
    }
    if full {
        out.push_str(&format!(
            "store     accept {:.0}/s at {:.1} us CPU each; claim + contact read + save {:.0}/s at {:.1} us each   ({})\n",
            num(&f["store"]["accept"]["per_sec"]), num(&f["store"]["accept"]["cpu_us"]),
            num(&f["store"]["delivery"]["per_sec"]), num(&f["store"]["delivery"]["cpu_us"]),
            if postgres {
                "the PostgreSQL store alone, no HTTP, all cores; CPU of this process, not the server's"
            } else {
                "the sled store alone, no HTTP, all cores"
            }
        ));
    }
    let threads = |phase: &str| -> String {
        f[phase]["gateway_threads_us"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {:.1}", num(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    for phase in ["accept", "delivery", "backlog"]
        .into_iter()
        .filter(|p| full || *p != "backlog")
    {
        out.push_str(&format!(
            "threads   {phase}: gateway CPU us per notification by thread: {}\n",
            threads(phase)
        ));
    }
    if full {
        out.push_str(&format!(
            "failover  {} WhatsApp requests after the ban answer ({} after the ban was recorded), first fallback {:.2} ms after it, {} of {} not sent   (target 0)\n",
            f["failover"]["whatsapp_requests_after_ban_answer"], f["failover"]["whatsapp_requests_after_ban_recorded"],
            num(&f["failover"]["first_fallback_after_ban_ms"]), f["failover"]["not_sent"], f["failover"]["notifications"]
        ));
    }
    let e = &f["events"];
    if full {
        out.push_str(&format!(
            "events    delivery {:.0}/s with no endpoint, {:.0}/s with a live one, {:.0}/s with a live and a dead one ({:+.1}% vs live; {} events at the live endpoint by the last send)   (target within 10%)\n",
            num(&e["no_endpoint"]["per_sec"]), num(&e["live_endpoint"]["per_sec"]),
            num(&e["live_and_dead_endpoint"]["per_sec"]), num(&e["dead_vs_live_pct"]),
            e["live_and_dead_endpoint"]["events_received_by_live_endpoint"]
        ));
    }
    if full {
        out.push_str(&format!(
            "memory    {} queued: peak RSS {:.0} MB, {} bytes {} per queued notification   (target <= 200 MB for 1,000,000)\n",
            f["memory"]["queued"], num(&f["memory"]["peak_rss_mb"]), f["memory"]["disk_bytes_per_queued"],
            if postgres { "in the database" } else { "on disk" }
        ));
    }
    if full {
        out.push_str(&format!(
            "restart   ready in {:.0} ms, first send after {:.0} ms (shutdown took {:.0} ms)   (target <= 2000 ms)\n",
            num(&f["restart"]["ready_ms"]), num(&f["restart"]["first_send_ms"]), num(&f["memory"]["shutdown_ms"])
        ));
    }
    if let Some(fleet) = f.get("fleet") {
        out.push_str(&fleet_lines(fleet));
    }
    if f["smoke"] == true {
        smoke_table(&out)
    } else {
        out
    }
}

/// The two-instance lines (`--instances 2`).
fn fleet_lines(f: &Value) -> String {
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let (a, d, o) = (&f["accept"], &f["delivery"], &f["failover"]);
    let mut out = format!(
        "2 inst.   accept {:.0}/s ({:.0} + {:.0}) vs {:.0}/s on one, p99 {:.2} ms, {} errors   (target >= one instance)\n\
         2 inst.   delivery {:.0}/s vs {:.0}/s on one ({} sent by A, {} by B), 202->provider p99 {:.2} ms   (target >= one instance)\n\
         2 inst.   failover {} WhatsApp sends started after the ban was recorded (A {}, B {}); B showed the ban {:.1} ms after it was recorded ({}); first fallback {:.2} ms after the ban answer; {} of {} not sent   (target 0, B within 100 ms)\n",
        num(&a["per_sec"]), num(&a["a_per_sec"]), num(&a["b_per_sec"]), num(&a["one_instance_per_sec"]), num(&a["p99_ms"]), a["errors"],
        num(&d["per_sec"]), num(&d["one_instance_per_sec"]), d["sent_by_a"], d["sent_by_b"], num(&d["accept_to_provider_p99_ms"]),
        o["whatsapp_sends_after_ban_recorded"], o["a_requests_after_ban_recorded"], o["b_sends_after_ban_recorded"],
        num(&o["b_saw_ban_after_ms"]),
        match o["b_last_whatsapp_send_after_ban_ms"].as_f64() {
            Some(after) if after >= 0.0 => format!("its last WhatsApp send {after:.1} ms after"),
            _ => "no WhatsApp send of B's after it".to_string(),
        },
        num(&o["first_fallback_after_ban_ms"]),
        o["not_sent"], o["notifications"],
    );
    if f.get("failover").is_none() {
        out = out
            .lines()
            .filter(|l| !l.starts_with("2 inst.   failover"))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    for (phase, what) in [("accept", "accept"), ("delivery", "delivery")] {
        let (two, one) = (&f[phase]["cost"], &f[phase]["one_instance_cost"]);
        if two.is_null() || one.is_null() {
            continue;
        }
        out.push_str(&format!(
            "2 inst.   {what} CPU per notification: gateways {:.1} us on two ({}) vs {:.1} us on one; database {:.1} vs {:.1} us; load generator {:.1} vs {:.1} us; total {:.1} vs {:.1} us   (a second instance should add no cost per notification)\n",
            num(&two["gateways_cpu_us"]),
            two["per_gateway_cpu_us"].as_array().map(|v| v.iter().map(|x| format!("{:.1}", num(x))).collect::<Vec<_>>().join(" + ")).unwrap_or_default(),
            num(&one["gateways_cpu_us"]),
            num(&two["database_cpu_us"]), num(&one["database_cpu_us"]),
            num(&two["generator_cpu_us"]), num(&one["generator_cpu_us"]),
            num(&two["total_cpu_us"]), num(&one["total_cpu_us"]),
        ));
        let work = |c: &Value| -> String {
            c["work"].as_array().map(|all| all.iter().map(|w| format!(
                "{:.1} accepts / {:.1} saves / {:.1} reads per group, {} claims of {:.1}, {} renewals, {:.1} transactions per 100, pool wait {:.1} us per get",
                num(&w["accepts_per_group"]), num(&w["saves_per_group"]), num(&w["reads_per_group"]),
                w["claims"], num(&w["claimed_per_claim"]), w["renewals"], num(&w["transactions_per_100"]), num(&w["pool_wait_us_per_get"]),
            )).collect::<Vec<_>>().join("; ")).unwrap_or_default()
        };
        out.push_str(&format!(
            "2 inst.   {what} database work: two: {}; one: {}\n",
            work(two),
            work(one)
        ));
    }
    out
}

/// A `--smoke` run's table: its tiny sizes say nothing about speed, so the targets (which
/// apply to full runs) are left off and a note says so.
fn smoke_table(full: &str) -> String {
    let mut out = String::new();
    for (i, line) in full.lines().enumerate() {
        let line = line.find("   (target").map_or(line, |at| &line[..at]);
        out.push_str(line);
        out.push('\n');
        if i == 0 {
            out.push_str(
                "smoke run: tiny sizes, to check the command works; these figures are not \
                 comparable and the targets apply to full runs only (cargo run --release -- bench)\n",
            );
        }
    }
    out
}

/// The lines of phases 1a and 1b (accept with the dispatcher at work).
fn dispatching_lines(f: &Value) -> String {
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let (p, s) = (&f["accept_paced"], &f["accept_sending"]);
    let mut out = format!(
        "accept    {:>9.0}/s   p50 {:>7.2} ms  p99 {:>7.2} ms   dispatcher at work, channels paced at the providers' rates (WhatsApp sent {:.0}/s meanwhile), {} errors, gateway CPU {:.1} us each   (target >= 20000/s, what an operator should expect)\n",
        num(&p["per_sec"]), num(&p["p50_ms"]), num(&p["p99_ms"]), num(&p["whatsapp_sends_per_sec"]), p["errors"], num(&p["gateway_cpu_us"])
    );
    out.push_str(&format!(
        "waiting   {} notifications waiting on pacing: gateway CPU {:.1}% of a core, WhatsApp sent {:.0}/s   (target <= 5% for 1,000,000)\n",
        p["waiting"]["queued"], num(&p["waiting"]["cpu_percent_of_a_core"]), num(&p["waiting"]["whatsapp_sends_per_sec"])
    ));
    out.push_str(&format!(
        "accept    {:>9.0}/s   p50 {:>7.2} ms  p99 {:>7.2} ms   dispatcher at work, every channel sending ({:.0} sends/s meanwhile), {} errors, gateway CPU {:.1} us each (accept and send)\n",
        num(&s["per_sec"]), num(&s["p50_ms"]), num(&s["p99_ms"]), num(&s["whatsapp_sends_per_sec"]), s["errors"], num(&s["gateway_cpu_us"])
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn figures(smoke: bool) -> Value {
        json!({"machine": {"cores": 2}, "clients": 16, "smoke": smoke})
    }

    #[test]
    fn a_smoke_table_shows_no_targets_and_says_why() {
        let text = table(&figures(true));
        assert!(!text.contains("target >="), "{text}");
        assert!(!text.contains("(target"), "{text}");
        assert!(text.contains("targets apply to full runs only"), "{text}");
        // Every figure line is still there.
        for name in [
            "accept", "delivery", "failover", "events", "memory", "restart",
        ] {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name}: {text}");
        }
    }

    #[test]
    fn a_full_table_keeps_its_targets() {
        let text = table(&figures(false));
        assert!(text.contains("(target >= 10000/s)"), "{text}");
        assert!(!text.contains("smoke run"), "{text}");
    }

    #[test]
    fn a_two_instance_run_adds_its_lines() {
        let mut f = figures(false);
        f["store_kind"] = json!("postgres");
        assert!(!table(&f).contains("2 inst."));
        f["fleet"] = json!({
            "accept": {"per_sec": 900, "a_per_sec": 450, "b_per_sec": 450, "one_instance_per_sec": 800},
            "delivery": {"per_sec": 700, "one_instance_per_sec": 600, "sent_by_a": 10, "sent_by_b": 12},
            "failover": {"whatsapp_sends_after_ban_recorded": 3, "a_requests_after_ban_recorded": 1,
                         "b_sends_after_ban_recorded": 2, "b_saw_ban_after_ms": 42.0,
                         "not_sent": 0, "notifications": 40},
        });
        let text = table(&f);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("2 inst.")).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("accept 900/s (450 + 450) vs 800/s on one"),
            "{text}"
        );
        assert!(lines[1].contains("10 sent by A, 12 by B"), "{text}");
        assert!(
            lines[2].contains("3 WhatsApp sends started after the ban was recorded (A 1, B 2)"),
            "{text}"
        );
        assert!(
            lines[2].contains("B showed the ban 42.0 ms after"),
            "{text}"
        );
    }

    #[test]
    fn a_two_instance_run_prints_the_cpu_per_notification_of_one_and_two() {
        let mut f = figures(false);
        f["store_kind"] = json!("postgres");
        f["compare_only"] = json!(true);
        let cost = |gw: &[f64], db: f64| {
            json!({"gateways_cpu_us": gw.iter().sum::<f64>(), "per_gateway_cpu_us": gw, "database_cpu_us": db,
                   "generator_cpu_us": 7.0, "total_cpu_us": gw.iter().sum::<f64>() + db + 7.0,
                   "work": [{"accepts_per_group": 14.5, "claims": 0}]})
        };
        f["fleet"] = json!({
            "accept": {"per_sec": 900, "a_per_sec": 450, "b_per_sec": 450, "one_instance_per_sec": 800,
                       "cost": cost(&[23.0, 24.0], 50.0), "one_instance_cost": cost(&[33.0], 34.0)},
            "delivery": {"per_sec": 700, "one_instance_per_sec": 600, "sent_by_a": 10, "sent_by_b": 12},
        });
        let text = table(&f);
        assert!(!text.contains("failover"), "{text}");
        assert!(!text.starts_with("memory"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("2 inst.   accept CPU per notification"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains(
                "gateways 47.0 us on two (23.0 + 24.0) vs 33.0 us on one; database 50.0 vs 34.0 us"
            ),
            "{line}"
        );
        assert!(line.contains("total 104.0 vs 74.0 us"), "{line}");
        assert!(text.contains("14.5 accepts"), "{text}");
    }

    #[test]
    fn a_postgres_table_says_so_and_shows_its_own_targets() {
        let mut f = figures(false);
        f["store_kind"] = json!("postgres");
        let text = table(&f);
        assert!(text.contains("store: PostgreSQL"), "{text}");
        assert!(text.contains("(target >= 12000/s)"), "{text}");
        assert!(text.contains("(target >= 6000/s)"), "{text}");
        assert!(text.contains("bytes in the database"), "{text}");
    }
}
