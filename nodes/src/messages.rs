//! Conversions between the ROS messages fusion_node and the summarizer exchange and the core's
//! types, apart from the nodes so that they are unit-tested: what fusion_node takes from
//! /sensors/* ([`SensorMsg`] → [`Input`]), what it publishes on /anomaly/events
//! ([`event_msg`]), and what the summarizer reads back from it ([`event_info`]).
use crate::{
    ingest::{cloud_fields, cloud_ref, image_ref, imu_sample},
    ros::{self, time_ns},
};
use fusion::{
    anomaly::Event,
    camera::{to_rgb8, Intrinsics},
    cloud::{decode_lidar_points, decode_radar_targets},
    frontend::imu_state,
    pipeline::Input,
    SensorId, StampNs,
};
use models::llm::summary::EventInfo;
use r2r::{
    diagnostic_msgs::msg::KeyValue,
    fusion_msgs::msg::AnomalyEvent,
    geometry_msgs::msg::Point,
    sensor_msgs::msg::{Image, Imu, PointCloud2},
    std_msgs::msg::Header,
};
use std::sync::{Arc, Mutex};

/// A message from one of fusion_node's sensor subscriptions (the ingest nodes' outputs on
/// `sensors/<name>`), with the declared sensor it came from.
pub enum SensorMsg {
    Camera(SensorId, Image),
    Lidar(SensorId, PointCloud2),
    Radar(SensorId, PointCloud2),
    Imu(SensorId, Imu),
}

impl fusion::sched::Message for SensorMsg {
    fn sensor(&self) -> SensorId {
        match self {
            SensorMsg::Camera(id, _) | SensorMsg::Lidar(id, _) | SensorMsg::Radar(id, _) | SensorMsg::Imu(id, _) => *id,
        }
    }
    fn stamp(&self) -> StampNs {
        let t = match self {
            SensorMsg::Camera(_, m) => &m.header.stamp,
            SensorMsg::Lidar(_, m) | SensorMsg::Radar(_, m) => &m.header.stamp,
            SensorMsg::Imu(_, m) => &m.header.stamp,
        };
        time_ns(t)
    }
}

/// Per camera: the intrinsics of its newest `sensors/<camera>/camera_info` (none until one
/// comes: the calibration's hold meanwhile).
pub type CameraIntrinsics = Mutex<std::collections::BTreeMap<SensorId, Intrinsics>>;

/// A sensor message as the pipeline's input, or the reason it is refused (counted by the
/// scheduler as `rejected.<reason>`). `intrinsics`: each camera's newest CameraInfo, read
/// for camera frames only: the IMU's hundreds of messages a second take no lock.
pub fn to_input(msg: SensorMsg, intrinsics: &CameraIntrinsics) -> Result<Input, String> {
    match msg {
        SensorMsg::Camera(sensor, img) => {
            let stamp = time_ns(&img.header.stamp);
            let rgb = to_rgb8(image_ref(&img)).map_err(|e| e.as_str().to_string())?;
            let intrinsics = intrinsics.lock().expect("intrinsics").get(&sensor).copied();
            Ok(Input::Camera { sensor, stamp, image: Arc::new(rgb), intrinsics })
        }
        SensorMsg::Lidar(sensor, c) => {
            let stamp = time_ns(&c.header.stamp);
            let f = cloud_fields(&c);
            let points = decode_lidar_points(cloud_ref(&c, &f)).map_err(|e| e.as_str().to_string())?;
            Ok(Input::Lidar { sensor, stamp, points: Arc::new(points), non_finite: 0, total: 0 })
        }
        SensorMsg::Radar(sensor, c) => {
            let stamp = time_ns(&c.header.stamp);
            let f = cloud_fields(&c);
            let targets = decode_radar_targets(cloud_ref(&c, &f)).map_err(|e| e.as_str().to_string())?;
            Ok(Input::Radar { sensor, stamp, targets: Arc::new(targets) })
        }
        SensorMsg::Imu(sensor, m) => {
            let s = imu_sample(&m);
            // imu_ingest publishes a unit quaternion; anything else did not come from it.
            let n = s.orientation.iter().map(|v| v * v).sum::<f64>().sqrt();
            if !(n - 1.0).abs().lt(&0.01) {
                return Err("bad_orientation".into());
            }
            Ok(Input::Imu(sensor, imu_state(&s)))
        }
    }
}

/// An anomaly event as fusion_node publishes it on /anomaly/events, stamped in `base_frame`.
pub fn event_msg(e: &Event, base_frame: &str) -> AnomalyEvent {
    AnomalyEvent {
        header: Header { stamp: ros::to_time(e.stamp_ns), frame_id: base_frame.into() },
        event_id: e.event_id,
        kind: e.kind.as_str().into(),
        severity: e.severity,
        rule: e.rule.into(),
        measured_value: e.measured_value,
        threshold: e.threshold,
        sensors: e.sensors.iter().map(|s| s.to_string()).collect(),
        track_ids: e.track_ids.clone(),
        zone: e.zone.clone(),
        position: Point { x: e.position[0], y: e.position[1], z: e.position[2] },
        onset: ros::to_time(e.onset_ns),
        evidence: e.evidence.iter().map(|k| KeyValue { key: k.key.clone(), value: k.value.clone() }).collect(),
    }
}

/// An /anomaly/events message as the summarizer reads it.
pub fn event_info(m: &AnomalyEvent) -> EventInfo {
    EventInfo {
        event_id: m.event_id,
        stamp_ns: time_ns(&m.header.stamp),
        kind: m.kind.clone(),
        severity: m.severity,
        rule: m.rule.clone(),
        measured_value: m.measured_value,
        threshold: m.threshold,
        sensors: m.sensors.clone(),
        track_ids: m.track_ids.clone(),
        zone: m.zone.clone(),
        position: [m.position.x, m.position.y, m.position.z],
        onset_ns: time_ns(&m.onset),
        evidence: m.evidence.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusion::{anomaly::EventKind, cloud::FloatCloud};

    fn event(stamp_ns: i64, onset_ns: i64) -> Event {
        Event {
            event_id: 17,
            stamp_ns,
            kind: EventKind::CollisionRisk,
            severity: 2,
            rule: "time_to_collision_below_threshold",
            measured_value: 1.25,
            threshold: 3.0,
            sensors: vec!["lidar", "radar"],
            track_ids: vec![4, 9],
            zone: "forward".into(),
            position: [6.5, -1.25, 0.75],
            onset_ns,
            evidence: vec![
                fusion::anomaly::KeyValue { key: "label".into(), value: "vehicle".into() },
                fusion::anomaly::KeyValue { key: "closing_speed_mps".into(), value: "5.20".into() },
            ],
        }
    }

    /// The summarizer (over /anomaly/events) and `fusion_replay --summaries` (in process) see
    /// the same event, field for field, so their summaries agree. Stamps at the edges: before
    /// the epoch (negative, a sim clock), a nanosecond short of a second, a wall-clock one.
    #[test]
    fn an_event_reads_back_from_its_message_as_the_replay_sees_it() {
        for (stamp, onset) in
            [(1_700_000_002_650_000_000, 1_700_000_001_999_999_999), (999_999_999, 0), (-1_500, -2_000_000_001)]
        {
            let e = event(stamp, onset);
            let msg = event_msg(&e, "base_link");
            assert_eq!(msg.header.frame_id, "base_link");
            assert_eq!(msg.kind, "collision_risk");
            assert!(msg.header.stamp.nanosec < 1_000_000_000 && msg.onset.nanosec < 1_000_000_000);
            assert_eq!(event_info(&msg), EventInfo::from(&e), "stamp {stamp}");
        }
    }

    fn cloud(header_ns: i64, names: Vec<&'static str>, points: &[&[f32]]) -> PointCloud2 {
        let mut c = FloatCloud::new(names);
        for p in points {
            c.values.extend_from_slice(p);
        }
        crate::ingest::cloud_msg(Header { stamp: ros::to_time(header_ns), frame_id: "base_link".into() }, &c)
    }

    #[test]
    fn sensor_messages_become_pipeline_inputs_or_a_named_refusal() {
        let none = CameraIntrinsics::default();
        let lidar = cloud(5_000_000_000, vec!["x", "y", "z", "intensity", "t"], &[&[1.0, 2.0, 0.5, 40.0, 0.01]]);
        match to_input(SensorMsg::Lidar(SensorId(1), lidar), &none).unwrap() {
            Input::Lidar { sensor, stamp, points, .. } => {
                assert_eq!((sensor, stamp), (SensorId(1), 5_000_000_000), "the subscription's sensor, handed on");
                assert_eq!((points[0].x, points[0].y, points[0].intensity, points[0].t), (1.0, 2.0, 40.0, 0.01));
            }
            other => panic!("{other:?}"),
        }
        let radar = cloud(6_000_000_000, vec!["x", "y", "z", "doppler", "rcs"], &[&[20.0, -3.0, 0.4, -4.5, 12.0]]);
        match to_input(SensorMsg::Radar(SensorId(3), radar), &none).unwrap() {
            Input::Radar { sensor, stamp, targets } => {
                assert_eq!((sensor, stamp), (SensorId(3), 6_000_000_000));
                assert_eq!((targets[0].doppler, targets[0].rcs), (-4.5, 12.0));
            }
            other => panic!("{other:?}"),
        }
        // A LiDAR cloud on the radar topic names its missing field instead of reading garbage.
        let wrong = cloud(0, vec!["x", "y", "z", "intensity", "t"], &[&[1.0, 2.0, 0.5, 40.0, 0.0]]);
        assert!(to_input(SensorMsg::Radar(SensorId(2), wrong), &none).is_err());

        let mut imu = Imu::default();
        imu.header.stamp = ros::to_time(7_000_000_000);
        imu.orientation.w = 1.0;
        assert!(
            matches!(to_input(SensorMsg::Imu(SensorId(4), imu.clone()), &none), Ok(Input::Imu(SensorId(4), s)) if s.stamp == 7_000_000_000)
        );
        imu.orientation.w = 0.5;
        assert_eq!(to_input(SensorMsg::Imu(SensorId(4), imu), &none).unwrap_err(), "bad_orientation");

        let image = Image {
            header: Header { stamp: ros::to_time(8_000_000_000), frame_id: "camera".into() },
            height: 2,
            width: 3,
            encoding: "rgb8".into(),
            is_bigendian: 0,
            step: 9,
            data: (0..18).collect(),
        };
        let k = [300.0, 0.0, 1.5, 0.0, 300.0, 1.0, 0.0, 0.0, 1.0];
        let intrinsics = Mutex::new([(SensorId(0), Intrinsics { k, width: 3, height: 2 })].into());
        match to_input(SensorMsg::Camera(SensorId(0), image.clone()), &intrinsics).unwrap() {
            Input::Camera { stamp, image: rgb, intrinsics, .. } => {
                assert_eq!((stamp, rgb.width, rgb.height, rgb.data[17]), (8_000_000_000, 3, 2, 17));
                assert_eq!(intrinsics.map(|i| i.k), Some(k), "the newest CameraInfo's, handed on");
            }
            other => panic!("{other:?}"),
        }
        // Another camera's frame takes its own CameraInfo, not this one's.
        match to_input(SensorMsg::Camera(SensorId(1), image.clone()), &intrinsics).unwrap() {
            Input::Camera { intrinsics, .. } => assert_eq!(intrinsics, None),
            other => panic!("{other:?}"),
        }
        let short = Image { data: vec![0; 10], ..image };
        assert!(
            to_input(SensorMsg::Camera(SensorId(0), short), &none).is_err(),
            "a buffer shorter than its header says"
        );
    }
}
