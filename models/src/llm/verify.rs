//! The claim verifier: a model-written summary is published only when every claim it makes
//! is supported by the burst's events and every event is mentioned. A wrong summary is worse
//! than none; whatever fails here goes out as the template instead.
//!
//! A candidate is cut into clauses (sentences, then `;`, `and`, `while`, `but`); each clause's
//! claims — event kinds, object classes, numbers with units, sensors, zones, track ids, times —
//! must all be supported by ONE event of the burst (two events merged into one false claim
//! fail here even when each word is true of some event). Numbers are compared at the
//! precision the text gives them ("3.1 m" supports a fact of 3.14). A collision said to have
//! happened is never supported: the rules only ever raise a collision *risk*.
use super::summary::{EventInfo, DAY_NS};

/// Why a candidate was rejected: the kind of the failing claim (`class`, `number`, `sensor`,
/// `zone`, `track`, `time`, `event`, `comparison`, `merged`, `missing_event`) and the words
/// that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub kind: &'static str,
    pub claim: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unsupported {} claim '{}'", self.kind, self.claim)
    }
}

/// Physical quantity of a number, from its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Quantity {
    Distance,
    Time,
    Speed,
    Gravity,
    Acceleration,
    Percent,
    /// Degrees: a bearing or a direction.
    Angle,
    /// No unit, or frames / periods / times: compared against every fact.
    Any,
}

#[derive(Debug, Clone, PartialEq)]
struct Number {
    value: f64,
    /// Half a unit of the last digit given: "3.1" → 0.05.
    tolerance: f64,
    quantity: Quantity,
    text: String,
}

/// Everything one clause claims.
#[derive(Debug, Default)]
struct Claims {
    kinds: Vec<&'static str>,
    classes: Vec<&'static str>,
    /// A sensor's kind word, with the word before it when that names which one ("left
    /// camera", "bumper lidar").
    sensors: Vec<(&'static str, Option<&'static str>)>,
    zones: Vec<String>,
    tracks: Vec<u32>,
    numbers: Vec<Number>,
    /// Time of day (seconds since midnight, tolerance) or run time (t=… s).
    times: Vec<(f64, f64, String)>,
    /// A collision stated as having happened.
    asserted_collision: Option<String>,
    /// A number said to be passed or not reached: ("above", 15.0) for "above the limit of
    /// 15.0". True only when the measured value lies on that side of the threshold.
    comparisons: Vec<(&'static str, Number)>,
}

/// Words that put the measured value above or below the number that follows (within a few
/// words: "above its threshold of 29.4 m/s²", "below the limit of 15.0").
const COMPARISON_WORDS: &[(&str, &str)] = &[
    ("above", "above"),
    ("over", "above"),
    ("exceed", "above"),
    ("exceeding", "above"),
    ("exceeds", "above"),
    ("exceeded", "above"),
    ("beyond", "above"),
    ("higher", "above"),
    ("below", "below"),
    ("under", "below"),
    ("lower", "below"),
    ("beneath", "below"),
];

/// Words that name an event kind (prefixes of lower-case words).
const KIND_WORDS: &[(&str, &str)] = &[
    ("intru", "zone_intrusion"),
    ("entered", "zone_intrusion"),
    ("entering", "zone_intrusion"),
    ("enters", "zone_intrusion"),
    ("inside", "zone_intrusion"),
    ("collision", "collision_risk"),
    ("ttc", "collision_risk"),
    ("closing", "collision_risk"),
    ("dropout", "sensor_dropout"),
    ("dropped", "sensor_dropout"),
    ("silent", "sensor_dropout"),
    ("stopped", "sensor_dropout"),
    ("degraded", "sensor_degraded"),
    ("blind", "sensor_degraded"),
    ("frozen", "sensor_degraded"),
    ("blackout", "sensor_degraded"),
    ("disagree", "sensor_disagreement"),
    ("discrepanc", "sensor_disagreement"),
    ("mismatch", "sensor_disagreement"),
    ("inconsisten", "sensor_disagreement"),
    ("impact", "impact"),
    ("shock", "impact"),
    ("deadline", "deadline_overrun"),
    ("overrun", "deadline_overrun"),
    ("detector", "model_degraded"),
    ("jump", "time_jump"),
    ("silence", "sensor_dropout"),
    ("trained", "model_degraded"),
];

const CLASS_WORDS: &[(&str, &str)] = &[
    ("person", "person"),
    ("people", "person"),
    ("pedestrian", "person"),
    ("human", "person"),
    ("man", "person"),
    ("woman", "person"),
    ("child", "person"),
    ("vehicle", "vehicle"),
    ("car", "vehicle"),
    ("truck", "vehicle"),
    ("van", "vehicle"),
    ("bus", "vehicle"),
    ("obstacle", "obstacle"),
    ("debris", "obstacle"),
    ("cone", "obstacle"),
    ("barrier", "obstacle"),
    ("crate", "obstacle"),
];

const SENSOR_WORDS: &[(&str, &str)] = &[
    ("camera", "camera"),
    ("cameras", "camera"),
    ("lidar", "lidar"),
    ("lidars", "lidar"),
    ("radar", "radar"),
    ("radars", "radar"),
    ("imu", "imu"),
    ("gyro", "imu"),
    ("gyroscope", "imu"),
    ("accelerometer", "imu"),
];

/// Words before a sensor that say which one: a robot's sensors are named after them
/// (`left_camera`, `front_bumper_lidar`, `rear_radar`).
const SENSOR_QUALIFIERS: &[&str] =
    &["left", "right", "front", "rear", "back", "side", "roof", "top", "bumper", "corner", "center", "centre"];

/// Whether an event's sensors support a sensor claim: one of them is of the claimed kind by
/// name (its `_`-separated parts hold the kind word: `camera`, `left_camera`,
/// `front_bumper_lidar`) and, when the text says which one ("left camera"), its name says
/// so too. The verifier knows the burst, not the robot: "the front camera" for `camera`
/// could be any of several cameras, so it is not taken (the template says `camera`).
fn names_sensor(names: &[String], kind: &str, qualifier: Option<&str>) -> bool {
    names.iter().any(|name| {
        let parts: Vec<&str> = name.split('_').collect();
        parts.contains(&kind) && qualifier.is_none_or(|q| parts.contains(&q))
    })
}

/// Words before "zone" that are not zone names.
const GENERIC_ZONE_WORDS: &[&str] =
    &["safety", "the", "a", "its", "this", "that", "same", "protected", "restricted", "danger", "monitored", "one"];

/// Words that make "collision" a risk rather than an event that happened.
const RISK_WORDS: &[&str] =
    &["risk", "potential", "possible", "imminent", "time", "ttc", "course", "warning", "avoid", "predicted", "threat"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Number(String),
    Clock(String),
    Punct(char),
}

fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            i += 1;
            // Digits with inner '.' or ':' (a decimal point is one followed by a digit).
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (matches!(chars[i], '.' | ':') && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(if s.contains(':') { Token::Clock(s) } else { Token::Number(s) });
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '\'') {
                i += 1;
            }
            let w: String = chars[start..i].iter().collect::<String>().to_lowercase();
            out.push(Token::Word(w.trim_end_matches("'s").trim_end_matches('\'').to_string()));
        } else {
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    out
}

/// Splits tokens into clauses: sentence ends, then ';', "and", "while", "but", "whereas".
fn clauses(tokens: &[Token]) -> Vec<&[Token]> {
    let is_break = |t: &Token| match t {
        Token::Punct(c) => matches!(c, '.' | '!' | '?' | ';'),
        Token::Word(w) => matches!(w.as_str(), "and" | "while" | "but" | "whereas" | "also"),
        _ => false,
    };
    tokens.split(is_break).filter(|c| !c.is_empty()).collect()
}

fn number(text: &str, unit: Quantity) -> Option<Number> {
    let value: f64 = text.parse().ok()?;
    let decimals = text.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
    Some(Number { value, tolerance: 0.5 * 10f64.powi(-decimals) + 1e-9, quantity: unit, text: text.into() })
}

fn word_at(tokens: &[Token], i: usize) -> Option<&str> {
    match tokens.get(i) {
        Some(Token::Word(w)) => Some(w.as_str()),
        _ => None,
    }
}

/// The unit after a number at `i` and how many tokens it spans.
fn unit_after(tokens: &[Token], i: usize) -> (Quantity, usize) {
    let w = word_at(tokens, i + 1);
    let slash = matches!(tokens.get(i + 2), Some(Token::Punct('/')));
    let metres = matches!(w, Some("m" | "meter" | "meters" | "metre" | "metres"));
    // "meters per second" is a speed and "meters per second squared" an acceleration, not
    // a distance: "an axis read 158.0 meters per second" for 158.0 m/s² is a false claim.
    let per_second = word_at(tokens, i + 2) == Some("per") && word_at(tokens, i + 3) == Some("second");
    match w {
        _ if metres && slash && word_at(tokens, i + 3) == Some("s") => (Quantity::Speed, 3),
        _ if metres && slash && matches!(word_at(tokens, i + 3), Some("s²" | "s2")) => (Quantity::Acceleration, 3),
        _ if metres && per_second && word_at(tokens, i + 4) == Some("squared") => (Quantity::Acceleration, 4),
        _ if metres && per_second => (Quantity::Speed, 3),
        Some("m" | "meter" | "meters" | "metre" | "metres" | "km") => (Quantity::Distance, 1),
        Some("s" | "sec" | "secs" | "second" | "seconds") => (Quantity::Time, 1),
        Some("ms" | "milliseconds") => (Quantity::Time, 1),
        Some("g") => (Quantity::Gravity, 1),
        Some("times") if word_at(tokens, i + 2) == Some("gravity") => (Quantity::Gravity, 2),
        Some("percent") => (Quantity::Percent, 1),
        _ if matches!(tokens.get(i + 1), Some(Token::Punct('%'))) => (Quantity::Percent, 1),
        Some("degrees" | "degree" | "deg") => (Quantity::Angle, 1),
        _ if matches!(tokens.get(i + 1), Some(Token::Punct('°'))) => (Quantity::Angle, 1),
        _ => (Quantity::Any, 0),
    }
}

fn claims_of(clause: &[Token]) -> Claims {
    let mut c = Claims::default();
    let words: Vec<&str> =
        clause.iter().filter_map(|t| if let Token::Word(w) = t { Some(w.as_str()) } else { None }).collect();
    for (i, w) in words.iter().enumerate() {
        if let Some((_, k)) = KIND_WORDS.iter().find(|(p, _)| w.starts_with(p)) {
            c.kinds.push(k);
        }
        // "from the vehicle", "ahead of the vehicle", "the ego vehicle": the robot itself.
        let before = |n: usize| i.checked_sub(n).map(|j| words[j]);
        let ego = matches!(before(1), Some("ego" | "our"))
            || (before(1) == Some("the")
                && matches!(
                    before(2),
                    Some("from" | "of" | "to" | "near" | "behind" | "around" | "toward" | "towards")
                ));
        if let Some((_, k)) = CLASS_WORDS.iter().find(|(p, _)| *w == *p || w.strip_suffix('s') == Some(p)) {
            if !(ego && *k == "vehicle") {
                c.classes.push(k);
            }
        }
        if let Some((_, s)) = SENSOR_WORDS.iter().find(|(p, _)| w == p) {
            let qualifier = before(1).and_then(|b| SENSOR_QUALIFIERS.iter().find(|q| **q == b)).copied();
            c.sensors.push((s, qualifier));
        }
    }
    // A collision that happened: "collided", "crashed", "involved in a collision" (whatever
    // risk word comes later in the clause: "…was involved in a collision, which required
    // action to prevent a potential collision"), or "collision" with no risk word.
    let collided = words.iter().find(|w| w.starts_with("collided") || w.starts_with("crash") || **w == "hit");
    let is_risk = |w: &str| RISK_WORDS.iter().any(|r| w.starts_with(r));
    let stated = words.iter().enumerate().any(|(k, w)| {
        w.starts_with("collision")
            && !words.get(k + 1).is_some_and(|n| is_risk(n))
            && words[k.saturating_sub(3)..k].iter().any(|p| {
                *p == "in" || ["involved", "experienc", "had", "has", "suffer", "caus"].iter().any(|a| p.starts_with(a))
            })
            && !words[k.saturating_sub(2)..k].iter().any(|p| is_risk(p))
    });
    let bare_collision = words.iter().any(|w| w.starts_with("collision")) && !words.iter().any(|w| is_risk(w));
    if let Some(w) = collided {
        c.asserted_collision = Some(w.to_string());
    } else if stated || bare_collision {
        c.asserted_collision = Some("collision".into());
    }
    let mut i = 0;
    while i < clause.len() {
        match &clause[i] {
            Token::Word(w) if w == "zone" => {
                // The words before "zone" (back to the clause's last number or punctuation,
                // at most 6), which `names_zone` matches against an event's zone: a user's
                // `rear_left` is written "rear-left" or "rear left" too.
                if let Some(before) = words_before_zone(&clause[..i]) {
                    c.zones.push(before);
                }
            }
            Token::Word(w) if matches!(w.as_str(), "track" | "tracks" | "id" | "ids") => {
                // "track 7", "tracks 3, 5 and 9": every number of the list.
                let mut j = i + 1;
                while let Some(t) = clause.get(j) {
                    match t {
                        Token::Number(n) => {
                            if let Ok(id) = n.parse() {
                                c.tracks.push(id)
                            }
                        }
                        Token::Punct(',' | '#') => {}
                        _ => break,
                    }
                    j += 1;
                }
                i = j;
                continue;
            }
            Token::Punct('#') => {
                if let Some(Token::Number(n)) = clause.get(i + 1) {
                    if let Ok(id) = n.parse() {
                        c.tracks.push(id);
                    }
                    i += 2;
                    continue;
                }
            }
            Token::Word(w) if w == "t" && matches!(clause.get(i + 1), Some(Token::Punct('='))) => {
                if let Some(Token::Number(n)) = clause.get(i + 2) {
                    if let Some(num) = number(n, Quantity::Time) {
                        c.times.push((num.value, num.tolerance, format!("t={n}")));
                    }
                    let (_, span) = unit_after(clause, i + 2);
                    i += 3 + span;
                    continue;
                }
            }
            Token::Clock(s) => {
                let parts: Vec<f64> = s.split(':').filter_map(|p| p.parse().ok()).collect();
                let last = s.rsplit(':').next().unwrap_or("");
                let decimals = last.split_once('.').map_or(0, |(_, d)| d.len()) as i32;
                let secs = match parts.as_slice() {
                    [h, m, s] => Some(h * 3600.0 + m * 60.0 + s),
                    [h, m] => Some(h * 3600.0 + m * 60.0),
                    _ => None,
                };
                if let Some(secs) = secs {
                    let tol = if parts.len() == 2 { 60.0 } else { 0.5 * 10f64.powi(-decimals) + 0.05 };
                    c.times.push((secs, tol, s.clone()));
                }
            }
            Token::Number(n) => {
                let (q, span) = unit_after(clause, i);
                // Times compare in seconds: "80 ms" is 0.08 s (and "80 s" is not 80 ms).
                let millis = q == Quantity::Time && matches!(word_at(clause, i + 1), Some("ms" | "milliseconds"));
                if let Some(mut num) = number(n, q) {
                    if millis {
                        num.value *= 1e-3;
                        num.tolerance *= 1e-3;
                    }
                    // "above the limit of 15.0": a comparison word at most four words back,
                    // with no other number between.
                    let compared = clause[i.saturating_sub(5)..i]
                        .iter()
                        .rev()
                        .take_while(|t| !matches!(t, Token::Number(_)))
                        .find_map(|t| match t {
                            Token::Word(w) => COMPARISON_WORDS.iter().find(|(p, _)| w == p).map(|(_, d)| *d),
                            _ => None,
                        });
                    if let Some(direction) = compared {
                        c.comparisons.push((direction, num.clone()));
                    }
                    c.numbers.push(num);
                }
                i += 1 + span;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    c
}

/// The numbers an event states, by quantity.
fn facts(e: &EventInfo) -> Vec<(f64, Quantity)> {
    let measured = match e.kind.as_str() {
        "zone_intrusion" => Quantity::Distance,
        "collision_risk" | "time_jump" => Quantity::Time,
        "sensor_degraded" if e.rule == "imu_saturated" => Quantity::Acceleration,
        _ => Quantity::Any,
    };
    let mut f = vec![(e.measured_value, measured), (e.threshold, measured)];
    if e.kind == "impact" {
        f[1].1 = Quantity::Acceleration;
    }
    // Rules that compare a share give it as a percentage too ("34 % of the points").
    if e.kind == "model_degraded" || matches!(e.rule.as_str(), "cloud_non_finite" | "hard_miss_ratio") {
        f.push((e.measured_value * 100.0, Quantity::Percent));
        f.push((e.threshold * 100.0, Quantity::Percent));
    }
    f.extend(e.position.iter().map(|p| (*p, Quantity::Distance)));
    f.push((e.position[0].hypot(e.position[1]), Quantity::Distance));
    if e.position[0] != 0.0 || e.position[1] != 0.0 {
        // The bearing, either side: "9° to the left" is written without its sign.
        let bearing = e.position[1].atan2(e.position[0]).to_degrees();
        f.extend([(bearing, Quantity::Angle), (bearing.abs(), Quantity::Angle)]);
    }
    f.extend(event_times(e).into_iter().map(|t| (t, Quantity::Time)));
    for (k, v) in &e.evidence {
        let Ok(x) = v.parse::<f64>() else { continue };
        let q = if k.ends_with("_mps") {
            Quantity::Speed
        } else if k.ends_with("_m") {
            Quantity::Distance
        } else if let Some(ms) = k.ends_with("_ms").then_some(x) {
            // In seconds, as claims in ms are read.
            f.push((ms * 1e-3, Quantity::Time));
            continue;
        } else if k.ends_with("_s") {
            Quantity::Time
        } else if k.ends_with("_g") {
            Quantity::Gravity
        } else if k.ends_with("_deg") {
            Quantity::Angle
        } else {
            Quantity::Any
        };
        f.push((x, q));
    }
    f
}

/// Words that make a different zone of a name they come before: "rear left" is not `left`.
const ZONE_DIRECTION_WORDS: &[&str] = &[
    "front", "rear", "back", "left", "right", "side", "inner", "outer", "upper", "lower", "near", "far", "north",
    "south", "east", "west",
];

/// The words before "zone" as the text joins them ("entered the rear-left", `_` written as
/// `-`), without a last "safety"; None when they name no zone ("the zone", "its safety zone").
fn words_before_zone(before: &[Token]) -> Option<String> {
    let start = before
        .iter()
        .rposition(|t| !matches!(t, Token::Word(_) | Token::Punct('-' | '\'' | '"' | '‘' | '’')))
        .map_or(0, |k| k + 1);
    let mut words: Vec<(String, bool)> = vec![];
    let mut hyphen = false;
    for t in &before[start..] {
        match t {
            Token::Word(w) => {
                for (k, part) in w.split('_').filter(|p| !p.is_empty()).enumerate() {
                    words.push((part.to_string(), k > 0 || (hyphen && !words.is_empty())));
                }
                hyphen = false;
            }
            Token::Punct('-') => hyphen = true,
            _ => {}
        }
    }
    if words.last().is_some_and(|(w, joined)| w == "safety" && !joined) {
        words.pop();
    }
    let last = words.last()?;
    if GENERIC_ZONE_WORDS.contains(&last.0.as_str()) {
        return None;
    }
    let words = &words[words.len().saturating_sub(6)..];
    let mut text = String::new();
    for (k, (w, joined)) in words.iter().enumerate() {
        if k > 0 {
            text.push(if *joined { '-' } else { ' ' });
        }
        text.push_str(w);
    }
    Some(text)
}

/// Whether the words a text puts before "zone" ([`words_before_zone`]) name the event's zone:
/// they end with the zone's parts (split at `_`, `-` or spaces, any case), and what comes
/// before those is not joined to them by a hyphen ("rear-left" is not `left`) nor a direction
/// word ("rear left" is not `left` either).
fn names_zone(before: &str, zone: &str) -> bool {
    let parts: Vec<String> =
        zone.to_lowercase().split(['_', '-', ' ']).filter(|p| !p.is_empty()).map(str::to_string).collect();
    // (word, joined to the previous one by a hyphen)
    let words: Vec<(&str, bool)> = before
        .split(' ')
        .flat_map(|group| group.split('-').enumerate().map(|(k, w)| (w, k > 0)))
        .filter(|(w, _)| !w.is_empty())
        .collect();
    if parts.is_empty() || words.len() < parts.len() {
        return false;
    }
    let run = words.len() - parts.len();
    if words[run..].iter().zip(&parts).any(|((w, _), p)| *w != p.as_str()) {
        return false;
    }
    run == 0 || (!words[run].1 && !ZONE_DIRECTION_WORDS.contains(&words[run - 1].0))
}

fn label(e: &EventInfo) -> Option<&str> {
    e.evidence.iter().find(|(k, _)| k == "label").map(|(_, v)| v.as_str())
}

/// The event's times as the text may give them: run time in seconds, or UTC time of day.
fn event_times(e: &EventInfo) -> Vec<f64> {
    [e.stamp_ns, e.onset_ns]
        .iter()
        .flat_map(|&ns| if ns < DAY_NS { vec![ns as f64 * 1e-9] } else { vec![ns.rem_euclid(DAY_NS) as f64 * 1e-9] })
        .collect()
}

/// The first claim of `c` that `e` does not support, as a rejection.
fn unsupported(c: &Claims, e: &EventInfo, events: usize) -> Option<Rejection> {
    let reject = |kind: &'static str, claim: String| Some(Rejection { kind, claim });
    if let Some(k) = c.kinds.iter().find(|k| **k != e.kind) {
        return reject("event", k.to_string());
    }
    let label = label(e);
    if let Some(k) = c.classes.iter().find(|k| Some(**k) != label) {
        return reject("class", k.to_string());
    }
    if let Some((s, q)) = c.sensors.iter().find(|(s, q)| !names_sensor(&e.sensors, s, *q)) {
        return reject("sensor", q.map_or(s.to_string(), |q| format!("{q} {s}")));
    }
    if let Some(z) = c.zones.iter().find(|z| !names_zone(z, &e.zone)) {
        return reject("zone", z.clone());
    }
    if let Some(t) = c.tracks.iter().find(|t| !e.track_ids.contains(t)) {
        return reject("track", t.to_string());
    }
    if let Some((_, _, text)) = c.times.iter().find(|(v, tol, _)| !event_times(e).iter().any(|t| (t - v).abs() <= *tol))
    {
        return reject("time", text.clone());
    }
    let facts = facts(e);
    let supported = |n: &Number| {
        facts.iter().any(|(v, q)| {
            let same_kind = n.quantity == Quantity::Any || *q == Quantity::Any || *q == n.quantity;
            same_kind && (v - n.value).abs() <= n.tolerance
        }) || (n.quantity == Quantity::Any && n.value == events as f64)
            || (n.quantity == Quantity::Time && n.value.abs() < 1e-9)
    };
    if let Some(n) = c.numbers.iter().find(|n| !supported(n)) {
        return reject("number", n.text.clone());
    }
    // "its mean brightness is 4.5, above the limit of 15.0": the threshold is right, the side
    // is not.
    let (m, th) = (e.measured_value, e.threshold);
    if let Some((direction, n)) = c
        .comparisons
        .iter()
        .find(|(d, n)| (n.value - th).abs() <= n.tolerance && m != th && (*d == "above") != (m > th))
    {
        return reject("comparison", format!("{direction} {}", n.text));
    }
    None
}

/// Checks a candidate summary of `events`: `Ok` when every clause's claims are supported by
/// one event and every event is mentioned (its kind named in a clause it supports).
pub fn verify(text: &str, events: &[EventInfo]) -> Result<(), Rejection> {
    let tokens = tokenize(text);
    let mut mentioned = vec![false; events.len()];
    for clause in clauses(&tokens) {
        let c = claims_of(clause);
        if let Some(w) = &c.asserted_collision {
            return Err(Rejection { kind: "event", claim: format!("{w} (only a collision risk is known)") });
        }
        let verdicts: Vec<Option<Rejection>> = events.iter().map(|e| unsupported(&c, e, events.len())).collect();
        let supporters: Vec<usize> = (0..events.len()).filter(|&i| verdicts[i].is_none()).collect();
        if supporters.is_empty() {
            // A claim no event supports, or claims of two events merged into one clause.
            let lone = single_claims(&c)
                .into_iter()
                .find(|(_, _, part)| !events.iter().any(|e| unsupported(part, e, events.len()).is_none()));
            return Err(match lone {
                Some((kind, claim, _)) => Rejection { kind, claim },
                None => Rejection { kind: "merged", claim: clause_text(clause) },
            });
        }
        if !c.kinds.is_empty() {
            for i in supporters {
                mentioned[i] = true;
            }
        }
    }
    match mentioned.iter().position(|m| !m) {
        Some(i) => Err(Rejection {
            kind: "missing_event",
            claim: format!("{} (event {})", events[i].kind, events[i].event_id),
        }),
        None => Ok(()),
    }
}

/// Each claim of `c` alone, with its kind and words.
fn single_claims(c: &Claims) -> Vec<(&'static str, String, Claims)> {
    let mut out = vec![];
    let mut push = |kind: &'static str, claim: String, f: &dyn Fn(&mut Claims)| {
        let mut part = Claims::default();
        f(&mut part);
        out.push((kind, claim, part));
    };
    for k in &c.kinds {
        push("event", k.to_string(), &|p| p.kinds.push(k));
    }
    for k in &c.classes {
        push("class", k.to_string(), &|p| p.classes.push(k));
    }
    for s in &c.sensors {
        push("sensor", s.0.to_string(), &|p| p.sensors.push(*s));
    }
    for z in &c.zones {
        push("zone", z.clone(), &|p| p.zones.push(z.clone()));
    }
    for t in &c.tracks {
        push("track", t.to_string(), &|p| p.tracks.push(*t));
    }
    for n in &c.numbers {
        push("number", n.text.clone(), &|p| p.numbers.push(n.clone()));
    }
    for t in &c.times {
        push("time", t.2.clone(), &|p| p.times.push(t.clone()));
    }
    for (d, n) in &c.comparisons {
        push("comparison", format!("{d} {}", n.text), &|p| p.comparisons.push((d, n.clone())));
    }
    out
}

fn clause_text(clause: &[Token]) -> String {
    clause
        .iter()
        .map(|t| match t {
            Token::Word(w) | Token::Number(w) | Token::Clock(w) => w.clone(),
            Token::Punct(p) => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::summary::template_summary;

    fn event(id: u64, kind: &str, t: f64) -> EventInfo {
        EventInfo {
            event_id: id,
            stamp_ns: (t * 1e9) as i64,
            kind: kind.into(),
            severity: 1,
            rule: String::new(),
            measured_value: 0.0,
            threshold: 0.0,
            sensors: vec![],
            track_ids: vec![],
            zone: String::new(),
            position: [0.0; 3],
            onset_ns: (t * 1e9) as i64,
            evidence: vec![],
        }
    }

    fn zone(id: u64, t: f64) -> EventInfo {
        EventInfo {
            rule: "track_inside_zone".into(),
            measured_value: 3.14,
            sensors: vec!["lidar".into(), "radar".into()],
            track_ids: vec![7],
            zone: "forward".into(),
            position: [3.1, 0.5, 0.9],
            evidence: vec![("label".into(), "person".into()), ("distance_m".into(), "3.14".into())],
            ..event(id, "zone_intrusion", t)
        }
    }

    fn degraded(id: u64, rule: &str, measured: f64, threshold: f64, sensor: &str, t: f64) -> EventInfo {
        EventInfo {
            rule: rule.into(),
            measured_value: measured,
            threshold,
            sensors: vec![sensor.into()],
            ..event(id, "sensor_degraded", t)
        }
    }

    fn disagreement(id: u64, t: f64) -> EventInfo {
        EventInfo {
            rule: "camera_misses_confirmed_object".into(),
            measured_value: 12.0,
            threshold: 10.0,
            sensors: vec!["lidar".into(), "radar".into(), "camera".into()],
            track_ids: vec![4],
            position: [14.0, -2.0, 0.5],
            evidence: vec![("label".into(), "obstacle".into()), ("range_m".into(), "14.2".into())],
            ..event(id, "sensor_disagreement", t)
        }
    }

    fn collision(id: u64, t: f64) -> EventInfo {
        EventInfo {
            rule: "ttc_below_threshold".into(),
            measured_value: 1.62,
            threshold: 2.0,
            sensors: vec!["lidar".into(), "radar".into()],
            track_ids: vec![3],
            position: [9.7, 0.2, 0.8],
            evidence: vec![
                ("label".into(), "vehicle".into()),
                ("ttc_s".into(), "1.62".into()),
                ("closing_speed_mps".into(), "6.0".into()),
            ],
            ..event(id, "collision_risk", t)
        }
    }

    fn dropout(id: u64, t: f64) -> EventInfo {
        EventInfo {
            rule: "stream_silent".into(),
            measured_value: 6.0,
            threshold: 5.0,
            sensors: vec!["lidar".into()],
            evidence: vec![("silent_s".into(), "0.60".into())],
            ..event(id, "sensor_dropout", t)
        }
    }

    fn impact(id: u64, t: f64) -> EventInfo {
        EventInfo {
            rule: "shock_above_threshold".into(),
            measured_value: 41.2,
            threshold: 29.4,
            sensors: vec!["imu".into()],
            evidence: vec![("shock_g".into(), "4.2".into())],
            ..event(id, "impact", t)
        }
    }

    fn rejected(text: &str, events: &[EventInfo]) -> &'static str {
        match verify(text, events) {
            Err(r) => r.kind,
            Ok(()) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn the_template_verifies_for_every_kind_and_for_a_burst() {
        let all = [zone(1, 12.0), disagreement(2, 12.3), collision(3, 12.5), dropout(4, 13.0), impact(5, 13.2)];
        for e in &all {
            let text = template_summary(std::slice::from_ref(e));
            assert_eq!(verify(&text, std::slice::from_ref(e)), Ok(()), "{text}");
        }
        let text = template_summary(&all);
        assert_eq!(verify(&text, &all), Ok(()), "{text}");
        // A declared sensor that never started (issue 19), by its configured name.
        let never = EventInfo {
            rule: "stream_never_started".into(),
            measured_value: 3.005,
            threshold: 3.0,
            sensors: vec!["left_radar".into()],
            evidence: vec![
                ("waited_s".into(), "3.005".into()),
                ("expected_rate_hz".into(), "20".into()),
                ("topic".into(), "sensors/left_radar".into()),
            ],
            ..event(8, "sensor_dropout", 3.0)
        };
        let text = template_summary(std::slice::from_ref(&never));
        assert!(text.contains("left_radar stream is silent, never started: 3.005 s"), "{text}");
        assert_eq!(verify(&text, &[never]), Ok(()), "{text}");
        let mut wall = zone(9, 0.0);
        wall.stamp_ns = 1_700_000_002_650_000_000;
        let text = template_summary(std::slice::from_ref(&wall));
        assert_eq!(verify(&text, &[wall]), Ok(()), "{text}");
    }

    #[test]
    fn faithful_paraphrases_are_accepted() {
        let z = [zone(1, 12.0)];
        for text in [
            "A person (track 7) entered the forward safety zone about 3.1 m from the vehicle.",
            "At t=12.0 s a pedestrian entered the 'forward' zone, 3 meters ahead, seen by lidar and radar.",
            "Track 7, a person, is inside the forward zone.",
        ] {
            assert_eq!(verify(text, &z), Ok(()), "{text}");
        }
        let c = [collision(3, 5.0)];
        assert_eq!(verify("Collision risk: a car (track 3) is 9.7 m ahead, time to collision 1.6 s.", &c), Ok(()));
        for text in [
            "The robot is on a collision course with a vehicle 9.7 m ahead.",
            "A vehicle ahead has a collision risk, time to collision 1.62 s.",
            "There is a potential collision with a car (track 3) that could happen in 1.6 s.",
        ] {
            assert_eq!(verify(text, &c), Ok(()), "{text}");
        }
        let burst = [zone(1, 12.0), dropout(2, 12.4)];
        let text = "A person entered the forward zone; the lidar stream went silent for 0.6 s.";
        assert_eq!(verify(text, &burst), Ok(()), "{text}");
    }

    #[test]
    fn each_kind_of_unsupported_claim_is_rejected_with_its_reason() {
        let z = [zone(1, 12.0)];
        assert_eq!(rejected("A vehicle entered the forward safety zone.", &z), "class");
        assert_eq!(rejected("A person entered the forward zone 8.5 m from the vehicle.", &z), "number");
        assert_eq!(rejected("A person entered the forward zone, seen by the camera.", &z), "sensor");
        assert_eq!(rejected("A person entered the rear zone.", &z), "zone");
        // A user's zone name of several words, written as the model writes it.
        let mut dock = zone(1, 12.0);
        dock.zone = "rear_left".into();
        for text in [
            "A person (track 7) entered the rear-left safety zone.",
            "A person entered the rear left zone.",
            "A person entered the 'rear_left' zone.",
            "A person entered the Rear Left zone.",
        ] {
            assert!(verify(text, std::slice::from_ref(&dock)).is_ok(), "{text}");
        }
        assert_eq!(rejected("A person entered the left zone.", std::slice::from_ref(&dock)), "zone");
        assert_eq!(rejected("A person entered the rear-right zone.", std::slice::from_ref(&dock)), "zone");
        // Another zone of the same robot whose name ends the same way.
        let mut left = dock.clone();
        left.zone = "left".into();
        assert!(verify("A person entered the left safety zone.", std::slice::from_ref(&left)).is_ok());
        assert_eq!(rejected("A person entered the rear-left zone.", std::slice::from_ref(&left)), "zone");
        assert_eq!(rejected("A person entered the rear left zone.", std::slice::from_ref(&left)), "zone");
        // A name with a word that is generic elsewhere, and one of four parts.
        for (name, text) in [
            ("Danger Area", "A person entered the danger area zone."),
            ("bay_3_north_dock", "A person entered the 'bay_3_north_dock' safety zone."),
            ("loading_dock", "A person entered the loading dock zone."),
        ] {
            let mut z = dock.clone();
            z.zone = name.into();
            assert!(verify(text, std::slice::from_ref(&z)).is_ok(), "{text}");
            let template = super::super::summary::template_summary(std::slice::from_ref(&z));
            assert!(verify(&template, std::slice::from_ref(&z)).is_ok(), "{template}");
        }
        assert_eq!(rejected("Track 9 entered the forward zone.", &z), "track");
        assert_eq!(rejected("At t=30.0 s a person entered the forward zone.", &z), "time");
        assert_eq!(rejected("The lidar stream dropped out.", &z), "event");
        // A collision that happened, for a collision risk.
        let c = [collision(3, 5.0)];
        assert_eq!(rejected("The robot was involved in a collision with a vehicle.", &c), "event");
        assert_eq!(rejected("A vehicle is experiencing a collision.", &c), "event");
        // …even when a risk word follows later in the clause (seen in the summary benchmark).
        let text = "The robot was involved in a collision with a vehicle at t=5.0 s, which required immediate action to prevent a potential collision.";
        assert_eq!(rejected(text, &c), "event");
        // A unit the fact was not given in: an IMU axis saturated at 158.0 m/s² is not a speed.
        let saturated = [degraded(6, "imu_saturated", 158.0, 156.9, "imu", 8.0)];
        assert_eq!(rejected("The imu is degraded: an axis read 158.0 meters per second.", &saturated), "number");
        assert_eq!(rejected("The imu is degraded: an axis read 158.0 meters.", &saturated), "number");
        for text in [
            "The IMU is degraded, saturated: an axis read 158.0 m/s² (limit 156.9 m/s²).",
            "The imu is degraded: an axis read 158.0 meters per second squared.",
        ] {
            assert_eq!(verify(text, &saturated), Ok(()), "{text}");
        }
        // A robot's sensors by their configured names: "the right camera" is `right_camera`,
        // "the left camera" is not, and a camera or the bumper LiDAR by kind is either.
        let side = [degraded(7, "image_blinded", 4.5, 15.0, "right_camera", 9.0)];
        for text in ["The right camera is blinded.", "The camera is blinded.", "A right_camera is blinded."] {
            assert_eq!(verify(text, &side), Ok(()), "{text}");
        }
        assert_eq!(rejected("The left camera is blinded.", &side), "sensor");
        assert_eq!(rejected("The radar is blinded.", &side), "sensor");
        let bumper = [degraded(8, "cloud_non_finite", 0.6, 0.2, "front_bumper_lidar", 9.0)];
        assert_eq!(verify("The bumper lidar is degraded.", &bumper), Ok(()));
        assert_eq!(rejected("The roof lidar is degraded.", &bumper), "sensor");
        // `camera` may be one of several: "the front camera" or "the left camera" is a guess.
        let camera = [degraded(9, "image_blinded", 4.5, 15.0, "camera", 9.0)];
        assert_eq!(rejected("The left camera is blinded.", &camera), "sensor");
        assert_eq!(verify("The camera is blinded.", &camera), Ok(()));
        // The right threshold on the wrong side (seen in the benchmark: a camera too dark).
        let dark = [degraded(7, "image_blinded", 4.5, 15.0, "camera", 9.0)];
        let text = "The camera is blinded, too dark: its mean brightness is 4.5, above the limit of 15.0.";
        assert_eq!(rejected(text, &dark), "comparison");
        let text = "The camera is blinded, too dark: its mean brightness is 4.5, below the limit of 15.0.";
        assert_eq!(verify(text, &dark), Ok(()), "{text}");
        let text = "The IMU measured an impact of 4.2 times gravity, above its threshold of 29.4 m/s².";
        assert_eq!(verify(text, &[impact(5, 13.2)]), Ok(()), "{text}");
        // A deadline is a time: "80 m" is not the 80 ms deadline (evidence `hard_deadline_ms`).
        let overrun = [EventInfo {
            rule: "hard_deadline_missed".into(),
            measured_value: 1.0,
            evidence: vec![("hard_deadline_ms".into(), "80".into())],
            ..event(8, "deadline_overrun", 10.0)
        }];
        assert_eq!(verify("A set missed its 80 ms hard deadline.", &overrun), Ok(()));
        assert_eq!(verify("A set missed its 0.08 s hard deadline.", &overrun), Ok(()));
        assert_eq!(rejected("A set missed its 80 m hard deadline.", &overrun), "number");
        assert_eq!(rejected("A set missed its 80 s hard deadline.", &overrun), "number");
        // Two events merged into one false claim: each word is true of some event.
        let burst = [disagreement(1, 3.0), zone(2, 3.2)];
        assert_eq!(
            rejected("There is a discrepancy in the lidar's report of a person entering the forward zone.", &burst),
            "merged"
        );
        // A burst of two summarized as one.
        assert_eq!(rejected("A person entered the forward zone.", &burst), "missing_event");
        // The field report's burst: the class is wrong (the intruder is a person, the
        // disagreement is about an obstacle), and the events are merged.
        let text = "A discrepancy in the lidar radar sensor's report of a vehicle entering a safety zone 3.69 meters.";
        assert_eq!(rejected(text, &burst), "class");
    }
}
