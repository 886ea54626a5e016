//! Domain randomisation of the simulated world: what every actor is shaped like and
//! painted with, and how the scene is lit. Everything here is drawn from a seeded stream
//! **independently of the actor's class**: no colour, pattern, LiDAR intensity or radar
//! RCS tells a person from a vehicle, so a detector trained on these frames has to learn
//! shapes (limbs and a head, wheels and windows, crates, cones and barriers).
use super::Class;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The body an actor has, within its class. Each is made of a few oriented boxes (parts)
/// inside the actor's bounding box, which stays the ground-truth box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Legs, torso, arms, head.
    Pedestrian,
    /// Body, a glazed cabin over part of its length, four wheels.
    Car,
    /// Body and a tall glazed cabin over most of its length, four wheels.
    Van,
    /// A glazed cab in front of a tall cargo box, six wheels.
    Truck,
    /// One box (plank pattern likely).
    Crate,
    /// A base plate and a stack that narrows upwards.
    Cone,
    /// Two legs under a wide, thin panel.
    Barrier,
}

/// What a part's surface is: paint follows the actor's colours and pattern; the others
/// have colours of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Material {
    Paint,
    Trim,
    Glass,
    Tyre,
    Skin,
}

/// One oriented box of an actor's body, in the actor's frame (x along its heading, y to
/// its left, z up from the ground), centre and half extents in metres.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub center: [f64; 3],
    pub half: [f64; 3],
    pub material: Material,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Pattern {
    Solid,
    /// Bands of the trim colour, `period` metres, horizontal (along z) or vertical.
    Stripes {
        period: f64,
        vertical: bool,
    },
    Checker {
        period: f64,
    },
    /// Cells of random brightness (worn paint, fabric, dirt).
    Speckle {
        cell: f64,
    },
}

/// How one actor looks to every sensor; none of it depends on the class.
#[derive(Debug, Clone, Serialize)]
pub struct Appearance {
    pub paint: [f64; 3],
    pub trim: [f64; 3],
    pub skin: [f64; 3],
    pub pattern: Pattern,
    /// Mean LiDAR return intensity of the actor's surface (±3 per return).
    pub lidar_intensity: f64,
    /// Radar cross-section of its returns, dBsm (±2 per return).
    pub rcs: f64,
}

impl Appearance {
    /// One flat colour, no pattern (tests paint actors with a chosen colour).
    pub fn solid(paint: [f64; 3]) -> Self {
        Self { paint, trim: paint, skin: paint, pattern: Pattern::Solid, lidar_intensity: 50.0, rcs: 5.0 }
    }
}

/// The scene's sky, ground, light and camera response.
#[derive(Debug, Clone, Serialize)]
pub struct SceneLook {
    pub sky_horizon: [f64; 3],
    pub sky_zenith: [f64; 3],
    pub ground: [f64; 3],
    /// Relative brightness difference of the ground's checker squares (0 = none), and
    /// their size (m).
    pub checker_contrast: f64,
    pub checker_size: f64,
    /// Amplitude of the ground's fine texture (0.3 m cells).
    pub grain: f64,
    /// Direction towards the sun (world frame, unit) and the ambient share of the light.
    pub sun: [f64; 3],
    pub ambient: f64,
    /// Exposure gain (1 = nominal) and the camera's pixel noise σ (8-bit levels).
    pub exposure: f64,
    pub noise_sigma: f64,
    /// Lane markings and sidewalks painted on the ground (none: one uniform ground).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub road: Option<Road>,
    /// Unlabelled structure beside the road: buildings, walls, poles, signs, trees.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scenery: Vec<Scenery>,
}

/// Road paint and sidewalks along the world x axis (the ego's heading at t = 0).
#[derive(Debug, Clone, Serialize)]
pub struct Road {
    /// Half width of the carriageway (m); beyond it, on both sides, a paved sidewalk.
    pub half_width: f64,
    pub sidewalk: [f64; 3],
    /// Side of the sidewalk's paving slabs (m).
    pub slab: f64,
    /// Lateral positions (m) of the dashed lane lines, their dash length and period (m).
    pub lanes: Vec<f64>,
    pub dash: f64,
    pub period: f64,
    /// Solid edge lines 0.3 m inside the kerbs.
    pub edge_lines: bool,
    pub paint: [f64; 3],
}

/// One static box of background structure (world frame; `center.z` is its centre height).
/// Seen by the camera only: LiDAR and radar do not model it, which is why only the
/// detector's training and held-out frames carry scenery (a scenario's bag has none, so
/// the fusion pipeline is never shown a building that LiDAR misses).
#[derive(Debug, Clone, Serialize)]
pub struct Scenery {
    pub center: [f64; 3],
    pub half: [f64; 3],
    pub yaw: f64,
    pub colour: [f64; 3],
    /// A facade's window grid: cell width and storey height (m); none for a plain box.
    pub windows: Option<[f64; 2]>,
}

/// Surroundings for a scene: with probability 0.85 a road with lane lines and sidewalks,
/// and 0–40 pieces of scenery — rows of buildings (±16–60 m to the side, 0–220 m ahead),
/// walls and fences, poles with lamps or sign panels, trees (trunk and crown). None of it
/// is labelled: the detector has to learn that boxes, posts and paint on the road are not
/// objects. Kept clear of the actors' lanes near the ego (|y| < 5 m ahead of x = 0).
pub fn random_surroundings(look: &mut SceneLook, r: &mut ChaCha8Rng) {
    if r.gen_bool(0.85) {
        let half_width = r.gen_range(3.5..9.0);
        let lanes = match r.gen_range(0..3) {
            0 => vec![0.0],
            1 => vec![-half_width / 2.0, 0.0, half_width / 2.0],
            _ => vec![r.gen_range(-1.0..1.0)],
        };
        let paint = if r.gen_bool(0.75) { [225.0, 225.0, 215.0] } else { [230.0, 190.0, 60.0] };
        look.road = Some(Road {
            half_width,
            sidewalk: any_color(r).map(|c| 0.5 * c + 0.5 * 150.0),
            slab: r.gen_range(0.4..1.5),
            lanes,
            dash: r.gen_range(1.5..4.0),
            period: r.gen_range(6.0..12.0),
            edge_lines: r.gen_bool(0.5),
            paint,
        });
    }
    let side = |r: &mut ChaCha8Rng| if r.gen_bool(0.5) { 1.0 } else { -1.0 };
    let mut scenery = Vec::new();
    // Building rows, one block after another along each side.
    for s in [-1.0, 1.0] {
        if r.gen_bool(0.3) {
            continue;
        }
        let setback = r.gen_range(16.0..40.0);
        let mut x = r.gen_range(-10.0..30.0);
        while x < 220.0 && scenery.len() < 30 {
            let len = r.gen_range(6.0..30.0);
            let depth = r.gen_range(6.0..20.0);
            let height = r.gen_range(4.0..30.0);
            let y = s * (setback + r.gen_range(0.0..12.0) + depth / 2.0);
            let windows = r.gen_bool(0.6).then(|| [r.gen_range(1.5..4.0), r.gen_range(2.8..3.6)]);
            scenery.push(Scenery {
                center: [x + len / 2.0, y, height / 2.0],
                half: [len / 2.0, depth / 2.0, height / 2.0],
                yaw: r.gen_range(-0.1..0.1),
                colour: any_color(r),
                windows,
            });
            x += len + if r.gen_bool(0.3) { r.gen_range(2.0..25.0) } else { 0.0 };
        }
    }
    // Walls, poles, signs and trees at the roadside.
    for _ in 0..r.gen_range(0..10) {
        let x = r.gen_range(0.0..120.0);
        let y = side(r) * r.gen_range(5.0..16.0);
        match r.gen_range(0..4) {
            0 => {
                let (len, h) = (r.gen_range(4.0..40.0), r.gen_range(0.4..2.5));
                scenery.push(Scenery {
                    center: [x + len / 2.0, y, h / 2.0],
                    half: [len / 2.0, r.gen_range(0.1..0.3), h / 2.0],
                    yaw: r.gen_range(-0.05..0.05),
                    colour: any_color(r),
                    windows: None,
                });
            }
            1 | 2 => {
                let (w, h) = (r.gen_range(0.08..0.3), r.gen_range(2.5..9.0));
                let colour = any_color(r);
                scenery.push(Scenery {
                    center: [x, y, h / 2.0],
                    half: [w / 2.0, w / 2.0, h / 2.0],
                    yaw: 0.0,
                    colour,
                    windows: None,
                });
                // A lamp arm or a sign panel at the top.
                let (pw, ph) =
                    if r.gen_bool(0.5) { (r.gen_range(0.5..1.5), r.gen_range(0.4..1.2)) } else { (0.15, 0.15) };
                let arm = if pw < 0.2 { -y.signum() * r.gen_range(0.8..2.5) } else { 0.0 };
                scenery.push(Scenery {
                    center: [x, y + arm / 2.0, h - ph / 2.0],
                    half: [0.04, pw / 2.0 + arm.abs() / 2.0, ph / 2.0],
                    yaw: 0.0,
                    colour: any_color(r),
                    windows: None,
                });
            }
            _ => {
                let (trunk, crown) = (r.gen_range(1.5..4.0), r.gen_range(1.5..5.0));
                scenery.push(Scenery {
                    center: [x, y, trunk / 2.0],
                    half: [0.15, 0.15, trunk / 2.0],
                    yaw: 0.0,
                    colour: hsv(r.gen_range(20.0..40.0), 0.5, r.gen_range(0.2..0.4)),
                    windows: None,
                });
                scenery.push(Scenery {
                    center: [x, y, trunk + crown / 2.0],
                    half: [crown / 2.0, crown / 2.0, crown / 2.0],
                    yaw: r.gen_range(0.0..1.5),
                    colour: if r.gen_bool(0.7) {
                        hsv(r.gen_range(70.0..140.0), 0.6, r.gen_range(0.2..0.6))
                    } else {
                        any_color(r)
                    },
                    windows: None,
                });
            }
        }
    }
    look.scenery = scenery;
}

impl Default for SceneLook {
    /// A clear day over a grey checkered road (the simulator's look before randomisation).
    fn default() -> Self {
        Self {
            sky_horizon: [120.0, 160.0, 230.0],
            sky_zenith: [180.0, 210.0, 230.0],
            ground: [110.0, 107.0, 99.0],
            checker_contrast: 0.27,
            checker_size: 2.0,
            grain: 0.0,
            sun: [0.37, 0.28, 0.79],
            ambient: 0.35,
            exposure: 1.0,
            noise_sigma: 3.0,
            road: None,
            scenery: vec![],
        }
    }
}

fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let c = v * s;
    let hp = (h.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// Any colour: hue uniform, some greys and near-blacks/whites, as real paint and clothes.
fn any_color(r: &mut ChaCha8Rng) -> [f64; 3] {
    let h = r.gen_range(0.0..360.0);
    let s = if r.gen_bool(0.25) { r.gen_range(0.0..0.15) } else { r.gen_range(0.2..1.0) };
    let v = r.gen_range(0.12..0.98);
    hsv(h, s, v)
}

/// An appearance drawn without looking at the class.
pub fn random_appearance(r: &mut ChaCha8Rng) -> Appearance {
    let paint = any_color(r);
    let trim = any_color(r);
    let skin = hsv(r.gen_range(15.0..40.0), r.gen_range(0.2..0.6), r.gen_range(0.25..0.95));
    let pattern = match r.gen_range(0..10) {
        0..=3 => Pattern::Solid,
        4..=5 => Pattern::Stripes { period: r.gen_range(0.08..0.5), vertical: r.gen_bool(0.5) },
        6..=7 => Pattern::Checker { period: r.gen_range(0.1..0.6) },
        _ => Pattern::Speckle { cell: r.gen_range(0.03..0.2) },
    };
    Appearance { paint, trim, skin, pattern, lidar_intensity: r.gen_range(10.0..100.0), rcs: r.gen_range(-10.0..20.0) }
}

/// A sky, ground, light and exposure: clear, overcast, dusk; asphalt, concrete, dirt.
pub fn random_look(r: &mut ChaCha8Rng) -> SceneLook {
    let (sky_horizon, sky_zenith) = match r.gen_range(0..4) {
        0 => (hsv(r.gen_range(200.0..225.0), r.gen_range(0.2..0.5), 0.9), hsv(210.0, r.gen_range(0.3..0.7), 0.85)),
        1 => {
            let g = r.gen_range(140.0..225.0);
            ([g, g, g * 1.02], [g * 0.9, g * 0.9, g * 0.95])
        }
        2 => (hsv(r.gen_range(15.0..40.0), r.gen_range(0.3..0.7), 0.85), hsv(r.gen_range(220.0..260.0), 0.5, 0.5)),
        _ => (hsv(r.gen_range(0.0..360.0), r.gen_range(0.0..0.3), r.gen_range(0.5..1.0)), any_color(r)),
    };
    let ground = match r.gen_range(0..4) {
        0 => {
            let g = r.gen_range(50.0..120.0);
            [g, g, g * 1.03]
        }
        1 => hsv(r.gen_range(25.0..45.0), r.gen_range(0.2..0.5), r.gen_range(0.3..0.6)),
        2 => {
            let g = r.gen_range(120.0..180.0);
            [g, g * 0.98, g * 0.93]
        }
        _ => hsv(r.gen_range(0.0..360.0), r.gen_range(0.0..0.35), r.gen_range(0.2..0.7)),
    };
    let elevation: f64 = r.gen_range(0.15..1.4);
    let azimuth: f64 = r.gen_range(-std::f64::consts::PI..std::f64::consts::PI);
    SceneLook {
        sky_horizon,
        sky_zenith,
        ground,
        checker_contrast: if r.gen_bool(0.5) { r.gen_range(0.0..0.35) } else { 0.0 },
        checker_size: r.gen_range(0.5..4.0),
        grain: r.gen_range(0.0..0.25),
        sun: [elevation.cos() * azimuth.cos(), elevation.cos() * azimuth.sin(), elevation.sin()],
        ambient: r.gen_range(0.2..0.7),
        exposure: r.gen_range(0.65..1.35),
        noise_sigma: r.gen_range(1.0..7.0),
        road: None,
        scenery: vec![],
    }
}

/// A body for `class` and a size for it (l, w, h in metres): several per class.
pub fn random_body(class: Class, r: &mut ChaCha8Rng) -> (Shape, [f64; 3]) {
    let mut u = |lo: f64, hi: f64| r.gen_range(lo..hi);
    match class {
        Class::Person => {
            // Children to tall adults; a carried bag or a stride widens the footprint.
            let h = u(1.05, 1.98);
            (Shape::Pedestrian, [u(0.3, 0.62), (0.25 * h + u(0.05, 0.25)).min(0.75), h])
        }
        Class::Vehicle => match (u(0.0, 1.0) * 10.0) as u32 {
            0..=5 => (Shape::Car, [u(3.6, 4.9), u(1.65, 1.95), u(1.35, 1.6)]),
            6..=8 => (Shape::Van, [u(4.6, 5.8), u(1.85, 2.1), u(1.85, 2.5)]),
            _ => (Shape::Truck, [u(6.0, 8.5), u(2.2, 2.5), u(2.7, 3.4)]),
        },
        Class::Obstacle => match (u(0.0, 1.0) * 3.0) as u32 {
            0 => {
                let s = u(0.6, 1.2);
                (Shape::Crate, [s * u(0.8, 1.25), s, s * u(0.7, 1.1)])
            }
            1 => {
                let s = u(0.4, 0.65);
                (Shape::Cone, [s, s, u(0.7, 1.05)])
            }
            _ => (Shape::Barrier, [u(0.3, 0.55), u(0.9, 1.45), u(0.8, 1.15)]),
        },
    }
}

/// The shape each class had before randomisation (and the default of hand-built actors).
pub fn default_body(class: Class) -> Shape {
    match class {
        Class::Person => Shape::Pedestrian,
        Class::Vehicle => Shape::Car,
        Class::Obstacle => Shape::Crate,
    }
}

/// The parts of a body of size (l, w, h); `phase` in [0, 1) poses a pedestrian's stride.
pub fn parts(shape: Shape, size: [f64; 3], phase: f64) -> Vec<Part> {
    let [l, w, h] = size;
    let part = |c: [f64; 3], half: [f64; 3], material| Part { center: c, half, material };
    match shape {
        Shape::Pedestrian => {
            let swing = (phase * std::f64::consts::TAU).sin() * 0.25 * l;
            let leg = [0.2 * l, 0.13 * w, 0.235 * h];
            let arm = [0.13 * l, 0.09 * w, 0.17 * h];
            vec![
                part([swing, 0.2 * w, leg[2]], leg, Material::Trim),
                part([-swing, -0.2 * w, leg[2]], leg, Material::Trim),
                part([0.0, 0.0, 0.645 * h], [0.3 * l, 0.3 * w, 0.175 * h], Material::Paint),
                part([-swing * 0.8, 0.41 * w, 0.63 * h], arm, Material::Paint),
                part([swing * 0.8, -0.41 * w, 0.63 * h], arm, Material::Paint),
                part([0.0, 0.0, 0.91 * h], [0.22 * l.max(0.4), 0.16 * w.max(0.5), 0.09 * h], Material::Skin),
            ]
        }
        Shape::Car | Shape::Van | Shape::Truck => {
            let r = (0.2 * h).clamp(0.25, 0.5);
            let body_bottom = 0.6 * r;
            let mut v = vec![];
            let axles = match shape {
                Shape::Car => {
                    let top = 0.55 * h;
                    v.push(part(
                        [0.0, 0.0, (body_bottom + top) / 2.0],
                        [l / 2.0, w / 2.0, (top - body_bottom) / 2.0],
                        Material::Paint,
                    ));
                    // Cabin from 30 % behind the centre to 15 % ahead: windows on its sides.
                    v.push(part(
                        [-0.075 * l, 0.0, (top + h) / 2.0],
                        [0.225 * l, 0.45 * w, (h - top) / 2.0],
                        Material::Glass,
                    ));
                    vec![-(l / 2.0 - 1.3 * r), l / 2.0 - 1.3 * r]
                }
                Shape::Van => {
                    let top = 0.45 * h;
                    v.push(part(
                        [0.0, 0.0, (body_bottom + top) / 2.0],
                        [l / 2.0, w / 2.0, (top - body_bottom) / 2.0],
                        Material::Paint,
                    ));
                    v.push(part(
                        [-0.1 * l, 0.0, (top + h) / 2.0],
                        [0.4 * l, 0.48 * w, (h - top) / 2.0],
                        Material::Glass,
                    ));
                    vec![-(l / 2.0 - 1.3 * r), l / 2.0 - 1.3 * r]
                }
                _ => {
                    // Cab over the front fifth, cargo box behind it.
                    let cab = 0.22 * l;
                    let top = 0.35 * h;
                    v.push(part(
                        [l / 2.0 - cab / 2.0, 0.0, (body_bottom + top) / 2.0],
                        [cab / 2.0, w / 2.0, (top - body_bottom) / 2.0],
                        Material::Paint,
                    ));
                    v.push(part(
                        [l / 2.0 - cab / 2.0, 0.0, (top + 0.8 * h) / 2.0],
                        [cab / 2.0, 0.48 * w, (0.8 * h - top) / 2.0],
                        Material::Glass,
                    ));
                    let cargo = l - cab - 0.1;
                    v.push(part(
                        [-l / 2.0 + cargo / 2.0, 0.0, (body_bottom + h) / 2.0],
                        [cargo / 2.0, w / 2.0, (h - body_bottom) / 2.0],
                        Material::Paint,
                    ));
                    vec![-(l / 2.0 - 1.3 * r), -(l / 2.0 - 3.0 * r), l / 2.0 - 1.3 * r]
                }
            };
            for x in axles {
                for side in [-1.0, 1.0] {
                    v.push(part([x, side * (w / 2.0 - 0.12), r], [r, 0.12, r], Material::Tyre));
                }
            }
            v
        }
        Shape::Crate => vec![part([0.0, 0.0, h / 2.0], [l / 2.0, w / 2.0, h / 2.0], Material::Paint)],
        Shape::Cone => {
            let base = 0.06 * h;
            let mut v = vec![part([0.0, 0.0, base / 2.0], [l / 2.0, w / 2.0, base / 2.0], Material::Trim)];
            // Four tiers from 70 % of the base width to 20 %: a stepped cone.
            let tiers = 4;
            let tier_h = (h - base) / tiers as f64;
            for k in 0..tiers {
                let f = 0.7 - 0.5 * k as f64 / (tiers - 1) as f64;
                let z = base + tier_h * (k as f64 + 0.5);
                v.push(part([0.0, 0.0, z], [f * l / 2.0, f * w / 2.0, tier_h / 2.0], Material::Paint));
            }
            v
        }
        Shape::Barrier => {
            let leg = [l / 2.0, 0.06, 0.3 * h];
            let panel_h = 0.45 * h;
            vec![
                part([0.0, w / 2.0 - 0.08, leg[2]], leg, Material::Trim),
                part([0.0, -(w / 2.0 - 0.08), leg[2]], leg, Material::Trim),
                part([0.0, 0.0, h - panel_h / 2.0], [(l / 2.0).min(0.08), w / 2.0, panel_h / 2.0], Material::Paint),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_lies_inside_the_actor_box() {
        let mut r = crate::rng(3, 0);
        for class in [Class::Person, Class::Vehicle, Class::Obstacle] {
            for _ in 0..200 {
                let (shape, size) = random_body(class, &mut r);
                for p in parts(shape, size, r.gen_range(0.0..1.0)) {
                    for k in 0..3 {
                        let (lo, hi) = if k == 2 { (0.0, size[2]) } else { (-size[k] / 2.0, size[k] / 2.0) };
                        assert!(p.center[k] - p.half[k] >= lo - 1e-9, "{shape:?} {size:?} {p:?}");
                        assert!(p.center[k] + p.half[k] <= hi + 1e-9, "{shape:?} {size:?} {p:?}");
                        assert!(p.half[k] > 0.0);
                    }
                }
            }
        }
    }

    #[test]
    fn appearance_does_not_depend_on_the_class() {
        // The same stream gives the same look whatever the class: nothing to learn from paint.
        let a = random_appearance(&mut crate::rng(5, 1));
        let b = random_appearance(&mut crate::rng(5, 1));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        // Over many draws, every channel is the brightest for some actors.
        let mut r = crate::rng(6, 1);
        let mut dominant = [0; 3];
        for _ in 0..300 {
            let c = random_appearance(&mut r).paint;
            let i = (0..3).max_by(|&x, &y| c[x].total_cmp(&c[y])).unwrap();
            dominant[i] += 1;
        }
        assert!(dominant.iter().all(|&n| n > 50), "{dominant:?}");
    }
}
