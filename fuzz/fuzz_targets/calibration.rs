//! The calibration YAML loader: any text is a calibration or a clear error, and a
//! calibration it accepts builds a front end.
#![no_main]
use fusion::calib::Calibration;
use fusion::frontend::Frontend;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(calib) = Calibration::from_yaml(text) {
            let _ = Frontend::new(&calib);
        }
    }
});
