//! What fusion_node publishes for people to look at: `/fusion/objects` messages and the
//! `/fusion/markers` RViz draws (`config/fusion.rviz`): a box per object in its class's
//! colour, a label with track id, class and time to collision, and the safety zones.
use fusion::{
    calib::SafetyZone,
    detect::Label,
    pipeline::{CameraView, FusedObject as Fused, SetOutput},
};
use r2r::{
    builtin_interfaces::msg::Duration as RosDuration,
    fusion_msgs::msg::FusedObject,
    geometry_msgs::msg::{Point, Pose, Quaternion, Vector3},
    sensor_msgs::msg::Image,
    std_msgs::msg::{ColorRGBA, Header},
    visualization_msgs::msg::{Marker, MarkerArray},
};

// visualization_msgs/Marker constants.
const CUBE: i32 = 1;
const LINE_STRIP: i32 = 4;
const TEXT_VIEW_FACING: i32 = 9;
const ADD: i32 = 0;
const DELETEALL: i32 = 3;

pub fn object_msg(o: &Fused) -> FusedObject {
    let (s, c) = (o.yaw / 2.0).sin_cos();
    FusedObject {
        track_id: o.track_id,
        label: o.label.as_str().into(),
        confidence: o.confidence,
        pose: Pose {
            position: Point { x: o.center[0], y: o.center[1], z: o.center[2] },
            orientation: Quaternion { x: 0.0, y: 0.0, z: s, w: c },
        },
        dimensions: Vector3 { x: o.size[0], y: o.size[1], z: o.size[2] },
        velocity: Vector3 { x: o.velocity[0], y: o.velocity[1], z: 0.0 },
        ground_velocity: planar(o.ground_velocity),
        odom_velocity: planar(o.odom_velocity),
        sensors: o.sensors,
        age: o.age,
        time_to_collision: o.time_to_collision.map(|t| t as f32).unwrap_or(f32::INFINITY),
    }
}

/// A velocity over the ground as the message carries it: NaN where it is unknown.
fn planar(v: Option<[f64; 2]>) -> Vector3 {
    let [x, y] = v.unwrap_or([f64::NAN; 2]);
    Vector3 { x, y, z: 0.0 }
}

/// Class colours, the same as the replay report's.
pub fn class_colour(label: Label) -> ColorRGBA {
    let [r, g, b] = match label {
        Label::Person => [0.84, 0.15, 0.16],
        Label::Vehicle => [0.12, 0.47, 0.71],
        Label::Obstacle => [0.55, 0.34, 0.29],
        Label::Unknown => [0.5, 0.5, 0.5],
    };
    ColorRGBA { r, g, b, a: 0.6 }
}

/// The label RViz shows over an object: `#12 person TTC 2.4 s` (no TTC when not closing in).
pub fn label_text(o: &Fused) -> String {
    let ttc = o.time_to_collision.map(|t| format!(" TTC {t:.1} s")).unwrap_or_default();
    format!("#{} {}{ttc}", o.track_id, o.label.as_str())
}

/// One set's markers: everything of the last set is cleared (DELETEALL), then a box and a
/// label per object (expiring after 0.3 s, so a stopped node leaves nothing stale) and the
/// safety zones as closed outlines on the ground.
pub fn markers(header: &Header, set: &SetOutput, zones: &[SafetyZone]) -> MarkerArray {
    let mut out =
        vec![Marker { header: header.clone(), ns: "objects".into(), action: DELETEALL, ..Default::default() }];
    let lifetime = RosDuration { sec: 0, nanosec: 300_000_000 };
    for o in &set.objects {
        let m = object_msg(o);
        out.push(Marker {
            header: header.clone(),
            ns: "objects".into(),
            id: o.track_id as i32,
            type_: CUBE,
            action: ADD,
            pose: m.pose.clone(),
            scale: m.dimensions.clone(),
            color: class_colour(o.label),
            lifetime: lifetime.clone(),
            ..Default::default()
        });
        let mut label_pose = m.pose.clone();
        label_pose.position.z += o.size[2] / 2.0 + 0.5;
        out.push(Marker {
            header: header.clone(),
            ns: "labels".into(),
            id: o.track_id as i32,
            type_: TEXT_VIEW_FACING,
            action: ADD,
            pose: label_pose,
            scale: Vector3 { x: 0.0, y: 0.0, z: 0.6 },
            color: ColorRGBA { a: 1.0, ..class_colour(o.label) },
            text: label_text(o),
            lifetime: lifetime.clone(),
            ..Default::default()
        });
    }
    for (i, z) in zones.iter().enumerate() {
        let mut points: Vec<Point> = z.polygon.iter().map(|&[x, y]| Point { x, y, z: 0.05 }).collect();
        points.extend(points.first().cloned());
        out.push(Marker {
            header: header.clone(),
            ns: format!("zone/{}", z.name),
            id: i as i32,
            type_: LINE_STRIP,
            action: ADD,
            pose: Pose { orientation: Quaternion { w: 1.0, ..Default::default() }, ..Default::default() },
            scale: Vector3 { x: 0.08, y: 0.0, z: 0.0 },
            color: ColorRGBA { r: 1.0, g: 0.5, b: 0.05, a: 0.9 },
            points,
            lifetime: lifetime.clone(),
            ..Default::default()
        });
    }
    MarkerArray { markers: out }
}

/// The set's camera frame with what perception made of it drawn in: the detector's boxes
/// (class colour, 2 px), the LiDAR clusters projected (cyan, 1 px) and the published tracks
/// (white, 1 px), for RViz's Image display (`fusion/camera_boxes`, `annotated_image: true`).
/// The header is the image's own (its stamp and camera frame).
pub fn annotated_image(header: Header, view: &CameraView) -> Image {
    let (w, h) = (view.image.width, view.image.height);
    let mut data = view.image.data.clone();
    let mut rect = |b: &[f32; 4], rgb: [u8; 3], thickness: u32| {
        let clamp = |v: f32, hi: u32| (v.max(0.0) as u32).min(hi.saturating_sub(1));
        let (x0, y0, x1, y1) = (clamp(b[0], w), clamp(b[1], h), clamp(b[2] - 1.0, w), clamp(b[3] - 1.0, h));
        let mut put = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            if let Some(px) = data.get_mut(i..i + 3) {
                px.copy_from_slice(&rgb);
            }
        };
        for t in 0..thickness {
            for x in x0..=x1 {
                put(x, (y0 + t).min(y1));
                put(x, y1.saturating_sub(t).max(y0));
            }
            for y in y0..=y1 {
                put((x0 + t).min(x1), y);
                put(x1.saturating_sub(t).max(x0), y);
            }
        }
    };
    for (_, b) in &view.tracks {
        rect(b, [255, 255, 255], 1);
    }
    for b in &view.lidar_boxes {
        rect(b, [23, 190, 207], 1);
    }
    for d in view.detections.iter().flatten() {
        let c = class_colour(d.label);
        rect(&d.bbox, [c.r, c.g, c.b].map(|v| (v * 255.0).round() as u8), 2);
    }
    Image { header, height: h, width: w, encoding: "rgb8".into(), is_bigendian: 0, step: w * 3, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion::calib::Calibration;

    fn object(id: u32, label: Label, ttc: Option<f64>) -> Fused {
        Fused {
            track_id: id,
            label,
            confidence: 0.9,
            center: [8.0, -1.0, 0.9],
            yaw: std::f64::consts::FRAC_PI_2,
            size: [0.6, 0.6, 1.8],
            velocity: [-2.0, 0.0],
            ground_velocity: None,
            odom_velocity: None,
            sensors: 3,
            age: 10,
            time_to_collision: ttc,
        }
    }

    fn set(objects: Vec<Fused>) -> SetOutput {
        SetOutput {
            stamp: 1,
            newest_stamp: 1,
            partial: false,
            missing: vec![],
            ego_speed: None,
            odom_frame: None,
            objects,
            times: Default::default(),
            camera_views: vec![],
        }
    }

    #[test]
    fn each_object_gets_a_box_in_its_class_colour_and_a_label_with_id_class_and_ttc() {
        let header = Header { frame_id: "base_link".into(), ..Default::default() };
        let zones = Calibration::default().safety_zones;
        let m =
            markers(&header, &set(vec![object(7, Label::Person, Some(2.44)), object(9, Label::Vehicle, None)]), &zones);
        assert_eq!(m.markers[0].action, DELETEALL);
        let boxes: Vec<&Marker> = m.markers.iter().filter(|m| m.type_ == CUBE).collect();
        let labels: Vec<&str> =
            m.markers.iter().filter(|m| m.type_ == TEXT_VIEW_FACING).map(|m| m.text.as_str()).collect();
        assert_eq!(labels, ["#7 person TTC 2.4 s", "#9 vehicle"]);
        assert_eq!((boxes[0].id, boxes[0].scale.z), (7, 1.8));
        assert_ne!(boxes[0].color, boxes[1].color, "classes differ in colour");
        // The box turned by its yaw (a quarter turn: z = w = sin/cos 45°).
        assert!((boxes[0].pose.orientation.z - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9);
        // Every zone as a closed outline in base_link.
        let outlines: Vec<&Marker> = m.markers.iter().filter(|m| m.type_ == LINE_STRIP).collect();
        assert_eq!(outlines.len(), zones.len());
        let pts = &outlines[0].points;
        assert_eq!(pts.len(), zones[0].polygon.len() + 1);
        assert_eq!((pts[0].x, pts[0].y), (pts[pts.len() - 1].x, pts[pts.len() - 1].y));
        assert!(m.markers.iter().all(|m| m.header.frame_id == "base_link"));
    }

    #[test]
    fn the_annotated_image_draws_boxes_on_their_edges_and_leaves_the_rest() {
        use fusion::{camera::Rgb8, detect::Detection2d};
        let (w, h) = (64u32, 48u32);
        let view = CameraView {
            camera: "camera",
            stamp: 5,
            image: std::sync::Arc::new(Rgb8 { width: w, height: h, data: vec![10; (w * h * 3) as usize] }),
            detections: Some(vec![Detection2d { label: Label::Person, score: 0.9, bbox: [10.0, 10.0, 30.0, 40.0] }]),
            lidar_boxes: vec![[40.0, 5.0, 60.0, 20.0]],
            // Partly outside the image: clipped, no panic.
            tracks: vec![(3, [-20.0, 30.0, 200.0, 100.0])],
        };
        let img = annotated_image(Header { frame_id: "camera".into(), ..Default::default() }, &view);
        assert_eq!((img.width, img.height, img.step, img.encoding.as_str()), (w, h, w * 3, "rgb8"));
        let px = |x: u32, y: u32| &img.data[((y * w + x) * 3) as usize..][..3];
        let person = class_colour(Label::Person);
        assert_eq!(px(10, 20), [person.r, person.g, person.b].map(|v| (v * 255.0).round() as u8));
        assert_eq!(px(11, 20), px(10, 20), "2 px thick");
        assert_eq!(px(29, 39), px(10, 20), "x1/y1 exclusive: the last pixel inside");
        assert_eq!(px(20, 25), [10, 10, 10], "inside untouched");
        assert_eq!(px(50, 5), [23, 190, 207]);
        assert_eq!(px(0, 47), [255, 255, 255]);
        assert_eq!(view.image.data[0], 10, "the frame itself is not drawn on");
    }

    #[test]
    fn an_object_message_carries_pose_size_and_an_infinite_ttc_when_not_closing() {
        let msg = object_msg(&object(3, Label::Obstacle, None));
        assert_eq!((msg.track_id, msg.label.as_str()), (3, "obstacle"));
        assert_eq!((msg.pose.position.x, msg.dimensions.z), (8.0, 1.8));
        assert!(msg.time_to_collision.is_infinite());
    }
}
