//! The ingest nodes' parameters: [`IngestNodeConfig`], the common ones ([`IngestCommon`])
//! beside each node's own.
use super::{check_tf_wait, finite, NodeConfig, TF_WAIT_S};
use anyhow::{bail, Context as _, Result};
use r2r::RosParams;
use serde::{Deserialize, Serialize};
use serde_norway::Value;

/// The parameters every ingest node has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
pub struct IngestCommon {
    /// The declared sensor this node serves: its calibration key and its sensors/<name> topic (default: the node's kind).
    pub sensor: String,
    /// Calibration YAML (docs/calibration.md); "" = the built-in standard robot.
    pub calibration: String,
    /// Seconds at start for /tf_static and /tf to place this node's sensor (0 … 60; 0 = do not wait); else the calibration's mount.
    pub tf_wait: f64,
    /// Messages waiting for the worker (at least 1); on overflow the oldest is dropped and counted.
    pub queue_size: i64,
    /// Seconds between /diagnostics messages.
    pub diagnostics_period: f64,
    /// DDS history depth of the input subscription (at least 1).
    pub input_depth: i64,
    /// Input QoS: best_effort (sensor-data QoS; every publisher matches) or reliable (DDS repairs losses; only reliable publishers match).
    pub input_reliability: String,
}

impl IngestCommon {
    /// The defaults of the node `spec` describes.
    pub fn of(spec: &crate::ingest::Spec) -> Self {
        Self {
            sensor: spec.sensor.as_str().into(),
            calibration: String::new(),
            tf_wait: TF_WAIT_S,
            queue_size: spec.queue_size as i64,
            diagnostics_period: 1.0,
            input_depth: spec.node.input().qos.depth as i64,
            input_reliability: "best_effort".into(),
        }
    }
}

/// An ingest node's parameters: the common ones and its own, side by side (one flat
/// namespace, as config/ingest.yaml writes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestNodeConfig<S> {
    #[serde(flatten)]
    pub common: IngestCommon,
    #[serde(flatten)]
    pub own: S,
}

impl<S: RosParams> RosParams for IngestNodeConfig<S> {
    fn register_parameters(
        &mut self,
        prefix: &str,
        param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        // The flat namespace has no parent parameter to describe.
        let _ = param;
        self.common.register_parameters(prefix, None, params)?;
        self.own.register_parameters(prefix, None, params)
    }
    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        self.common.get_parameter(name).or_else(|_| self.own.get_parameter(name))
    }
    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        match self.common.get_parameter(name) {
            Ok(_) => self.common.set_parameter(name, value),
            Err(_) => self.own.set_parameter(name, value),
        }
    }
    fn check_parameter(&self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        match self.common.check_parameter(name, value) {
            Err(r2r::Error::InvalidParameterName { .. }) => self.own.check_parameter(name, value),
            other => other,
        }
    }
}

/// A ROS-free number-parameter struct (`fusion::cloud::NumberParams`: the LiDAR and radar
/// filters) as r2r parameters: its schema's names, meanings and ranges.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Numbers<P>(pub P);

impl<P: fusion::cloud::NumberParams + Clone> RosParams for Numbers<P> {
    fn register_parameters(
        &mut self,
        prefix: &str,
        _param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        let dot = if prefix.is_empty() { String::new() } else { format!("{prefix}.") };
        for spec in P::SCHEMA {
            let name = format!("{dot}{}", spec.name);
            if let Some(given) = params.shift_remove(&name) {
                self.set_parameter(spec.name, &given.value).map_err(|e| e.update_param_name(&name))?;
            }
            let value = r2r::ParameterValue::Double(self.0.get(spec.name).expect("a named parameter"));
            params.insert(name, r2r::Parameter { value, description: spec.description });
        }
        Ok(())
    }
    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        self.0
            .get(name)
            .map(r2r::ParameterValue::Double)
            .ok_or_else(|| r2r::Error::InvalidParameterName { name: name.into() })
    }
    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        let mut checked = self.0.clone();
        Self::apply(&mut checked, name, value)?;
        self.0 = checked;
        Ok(())
    }
    fn check_parameter(&self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        Self::apply(&mut self.0.clone(), name, value)
    }
}

impl<P: fusion::cloud::NumberParams> Numbers<P> {
    fn apply(p: &mut P, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        if p.get(name).is_none() {
            return Err(r2r::Error::InvalidParameterName { name: name.into() });
        }
        let v = crate::ros::number(value)
            .ok_or_else(|| r2r::Error::InvalidParameterType { name: name.into(), ty: "Double" })?;
        p.set(name, v).map_err(|msg| r2r::Error::ParameterValueConv { name: name.into(), msg })
    }
}

/// Three numbers (an IMU bias) as one double-array parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Vec3(pub [f64; 3]);

impl Vec3 {
    fn from_value(name: &str, value: &r2r::ParameterValue) -> r2r::Result<Self> {
        let v: Vec<f64> = match value {
            r2r::ParameterValue::DoubleArray(v) => v.clone(),
            r2r::ParameterValue::IntegerArray(v) => v.iter().map(|&x| x as f64).collect(),
            _ => return Err(r2r::Error::InvalidParameterType { name: name.into(), ty: "DoubleArray" }),
        };
        match <[f64; 3]>::try_from(v) {
            Ok(a) if a.iter().all(|x| x.is_finite()) => Ok(Vec3(a)),
            _ => Err(r2r::Error::ParameterValueConv { name: name.into(), msg: "must be 3 finite numbers".into() }),
        }
    }
}

impl RosParams for Vec3 {
    fn register_parameters(
        &mut self,
        prefix: &str,
        param: Option<r2r::Parameter>,
        params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        if let Some(given) = params.shift_remove(prefix) {
            *self = Self::from_value(prefix, &given.value)?;
        }
        let mut p = param.unwrap_or_else(|| r2r::Parameter::new(r2r::ParameterValue::NotSet));
        p.value = r2r::ParameterValue::DoubleArray(self.0.to_vec());
        params.insert(prefix.to_string(), p);
        Ok(())
    }
    fn get_parameter(&mut self, name: &str) -> r2r::Result<r2r::ParameterValue> {
        match name {
            "" => Ok(r2r::ParameterValue::DoubleArray(self.0.to_vec())),
            _ => Err(r2r::Error::InvalidParameterName { name: name.into() }),
        }
    }
    fn set_parameter(&mut self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        self.check_parameter(name, value)?;
        *self = Self::from_value(name, value)?;
        Ok(())
    }
    fn check_parameter(&self, name: &str, value: &r2r::ParameterValue) -> r2r::Result<()> {
        if !name.is_empty() {
            return Err(r2r::Error::InvalidParameterName { name: name.into() });
        }
        Self::from_value(name, value).map(|_| ())
    }
}

/// camera_ingest's own parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
pub struct CameraOptions {
    /// raw reads image_raw; compressed reads image_raw/compressed (JPEG or PNG) instead, as image_transport names it.
    pub image_transport: String,
    /// Scale the image (bilinear, aspect kept) to fit within this width; 0 = keep the input size. The published CameraInfo is scaled alike.
    pub output_width: i64,
    /// Scale the image to fit within this height; 0 = keep the input size.
    pub output_height: i64,
}

/// imu_ingest's own parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, RosParams)]
pub struct ImuOptions {
    /// rad/s, subtracted from the readings (sensor frame).
    pub gyro_bias: Vec3,
    /// m/s², subtracted from the readings (sensor frame).
    pub accel_bias: Vec3,
    /// m/s²: readings at or beyond count as samples.saturated (still published).
    pub accel_saturation: f64,
    /// rad/s: readings at or beyond count as samples.saturated (still published).
    pub gyro_saturation: f64,
    /// Accelerometer weight per sample in the complementary filter.
    pub filter_gain: f64,
}

impl ImuOptions {
    pub fn params(&self) -> fusion::imu::ImuParams {
        fusion::imu::ImuParams {
            gyro_bias: self.gyro_bias.0,
            accel_bias: self.accel_bias.0,
            accel_saturation: self.accel_saturation,
            gyro_saturation: self.gyro_saturation,
            filter_gain: self.filter_gain,
        }
    }
}

pub type LidarIngestConfig = IngestNodeConfig<Numbers<fusion::cloud::LidarParams>>;
pub type RadarIngestConfig = IngestNodeConfig<Numbers<fusion::cloud::RadarParams>>;
pub type CameraIngestConfig = IngestNodeConfig<CameraOptions>;
pub type ImuIngestConfig = IngestNodeConfig<ImuOptions>;

macro_rules! ingest_node_config {
    ($config:ty, $spec:expr, $own:expr) => {
        impl Default for $config {
            fn default() -> Self {
                Self { common: IngestCommon::of(&$spec), own: $own }
            }
        }
        impl NodeConfig for $config {
            const NODE: &'static str = $spec.node.name;
            fn is_live(name: &str) -> bool {
                <$config as IngestLive>::live(name)
            }
            fn range(name: &str) -> &'static str {
                <$config as IngestLive>::range(name)
            }
            fn validate(&self) -> Result<()> {
                self.common.check()?;
                <$config as IngestLive>::check_own(self)
            }
            fn tolerated(name: &str) -> bool {
                is_an_ingest_parameter(name)
            }
        }
        impl IngestConfig for $config {
            fn common(&self) -> &IngestCommon {
                &self.common
            }
        }
    };
}

/// Whether any of the four ingest nodes has `name` (the launch file's sensor include hands
/// each the arguments of every kind, `image_transport` to a LiDAR's node too).
fn is_an_ingest_parameter(name: &str) -> bool {
    let has = |flat: Vec<(String, Value)>| flat.into_iter().any(|(n, _)| n == name);
    has(CameraIngestConfig::default().flat())
        || has(LidarIngestConfig::default().flat())
        || has(RadarIngestConfig::default().flat())
        || has(ImuIngestConfig::default().flat())
}

/// An ingest node's config: the common parameters and its own.
pub trait IngestConfig: NodeConfig {
    fn common(&self) -> &IngestCommon;
}

/// Which of an ingest node's parameters `ros2 param set` changes while it runs: the LiDAR
/// and radar filters.
trait IngestLive {
    fn live(_name: &str) -> bool {
        false
    }
    fn range(_name: &str) -> &'static str {
        ""
    }
    /// The node's own parameters' checks.
    fn check_own(&self) -> Result<()>;
}
impl<P: fusion::cloud::NumberParams> IngestLive for IngestNodeConfig<Numbers<P>> {
    fn live(name: &str) -> bool {
        P::spec(name).is_some()
    }
    fn range(name: &str) -> &'static str {
        P::spec(name).map_or("", |s| s.range.text())
    }
    fn check_own(&self) -> Result<()> {
        for spec in P::SCHEMA {
            let v = self.own.0.get(spec.name).expect("a named parameter");
            P::default()
                .set(spec.name, v)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("parameter {}", spec.name))?;
        }
        Ok(())
    }
}
impl IngestLive for CameraIngestConfig {
    fn check_own(&self) -> Result<()> {
        for (name, v) in [("output_width", self.own.output_width), ("output_height", self.own.output_height)] {
            if !(0..=fusion::camera::MAX_OUTPUT_SIDE as i64).contains(&v) {
                bail!(
                    "parameter {name} must be 0 (keep the input size) .. {}, got {v}",
                    fusion::camera::MAX_OUTPUT_SIDE
                );
            }
        }
        match self.own.image_transport.as_str() {
            "raw" | "compressed" => Ok(()),
            other => bail!("parameter image_transport must be raw or compressed, got '{other}'"),
        }
    }
}
impl IngestLive for ImuIngestConfig {
    fn check_own(&self) -> Result<()> {
        let o = &self.own;
        for (name, v) in [
            ("accel_saturation", o.accel_saturation),
            ("gyro_saturation", o.gyro_saturation),
            ("filter_gain", o.filter_gain),
        ] {
            finite(name, v)?;
        }
        Ok(())
    }
}

ingest_node_config!(LidarIngestConfig, crate::ingest::LIDAR, Numbers(Default::default()));
ingest_node_config!(RadarIngestConfig, crate::ingest::RADAR, Numbers(Default::default()));
ingest_node_config!(
    CameraIngestConfig,
    crate::ingest::CAMERA,
    CameraOptions { image_transport: "raw".into(), output_width: 0, output_height: 0 }
);
ingest_node_config!(ImuIngestConfig, crate::ingest::IMU, {
    let d = fusion::imu::ImuParams::default();
    ImuOptions {
        gyro_bias: Vec3(d.gyro_bias),
        accel_bias: Vec3(d.accel_bias),
        accel_saturation: d.accel_saturation,
        gyro_saturation: d.gyro_saturation,
        filter_gain: d.filter_gain,
    }
});

impl IngestCommon {
    /// The parameters' names, in declaration order.
    pub fn names(&self) -> Vec<String> {
        let mut registered = r2r::indexmap::IndexMap::new();
        self.clone().register_parameters("", None, &mut registered).expect("registers");
        registered.keys().cloned().collect()
    }

    /// What the node checks before it starts, naming the parameter.
    pub fn check(&self) -> Result<()> {
        check_tf_wait(self.tf_wait)?;
        finite("diagnostics_period", self.diagnostics_period)?;
        for (name, v) in [("queue_size", self.queue_size), ("input_depth", self.input_depth)] {
            if v < 0 {
                bail!("parameter {name} must be >= 0, got {v}");
            }
        }
        match self.input_reliability.as_str() {
            "best_effort" | "reliable" => Ok(()),
            other => bail!("parameter input_reliability must be best_effort or reliable, got '{other}'"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// config/ingest.yaml's block of each ingest node reads into its config, at the
    /// defaults; each node's page shows its own parameters (generated), and the common table
    /// of ingest_common.md names exactly the common ones.
    #[test]
    fn the_ingest_nodes_file_and_pages_hold_their_parameters() {
        fn check<C: NodeConfig + PartialEq + std::fmt::Debug>(root: &Path) {
            let shipped = C::from_params_file(&root.join("config/ingest.yaml")).expect("config/ingest.yaml");
            assert_eq!(shipped, C::default(), "{}", C::NODE);
            let common: Vec<String> = IngestCommon::of(&crate::ingest::LIDAR).names();
            crate::check_generated(
                &root.join(format!("docs/nodes/{}.md", C::NODE)),
                "<!-- generated from sensor_fusion::config",
                "<!-- end of generated table -->",
                &C::markdown_table_where(|name| !common.iter().any(|c| c == name)),
            );
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        check::<LidarIngestConfig>(&root);
        check::<RadarIngestConfig>(&root);
        check::<CameraIngestConfig>(&root);
        check::<ImuIngestConfig>(&root);
        let page = std::fs::read_to_string(root.join("docs/nodes/ingest_common.md")).unwrap();
        let table = page.lines().skip_while(|l| !l.starts_with("| parameter |")).take_while(|l| !l.is_empty());
        let mut named: Vec<String> =
            table.filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(String::from)).collect();
        named.retain(|n| n != "use_sim_time");
        assert_eq!(named, IngestCommon::of(&crate::ingest::LIDAR).names(), "ingest_common.md's table");
    }

    #[test]
    fn an_ingest_filter_is_refused_out_of_its_range_and_a_bias_needs_three_numbers() {
        let mut c = LidarIngestConfig::default();
        let e = c.set_parameter("max_non_finite_ratio", &r2r::ParameterValue::Double(2.0)).unwrap_err();
        assert!(e.to_string().contains("within [0, 1]"), "{e}");
        c.set_parameter("max_range", &r2r::ParameterValue::Integer(30)).expect("a whole number is a double");
        assert_eq!(c.own.0.max_range, 30.0);
        c.set_parameter("queue_size", &r2r::ParameterValue::Integer(8)).expect("a common parameter");
        assert_eq!(c.common.queue_size, 8);
        let mut imu = ImuIngestConfig::default();
        let e = imu.set_parameter("gyro_bias", &r2r::ParameterValue::DoubleArray(vec![0.1, 0.2])).unwrap_err();
        assert!(e.to_string().contains("3 finite numbers"), "{e}");
        imu.set_parameter("gyro_bias", &r2r::ParameterValue::DoubleArray(vec![0.1, 0.2, 0.3])).unwrap();
        assert_eq!(imu.own.params().gyro_bias, [0.1, 0.2, 0.3]);
    }
}
