//! The summarizer's optional voice: each published summary spoken by espeak-ng (Debian's
//! `espeak-ng`, installed by set-up) into a WAV file under a configured directory, and played
//! when the machine has an audio output. No ROS here: the node publishes each file's path.
//!
//! A file is written under a temporary name and renamed when complete, so whoever reads the
//! published path never sees half a WAV; only the newest `keep_files` of our own files are
//! kept, so a long run cannot fill the disk with speech.
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
pub struct SpeechConfig {
    pub dir: PathBuf,
    /// espeak-ng voice (`espeak-ng --voices` lists them).
    pub voice: String,
    pub words_per_minute: u32,
    /// Newest files kept in `dir`; older `summary_*.wav` files are deleted.
    pub keep_files: usize,
    /// Play each file when an audio output exists (ALSA playback device and `aplay`).
    pub play: bool,
}

pub struct Speaker {
    config: SpeechConfig,
    /// File names sort in the order they were spoken, across runs too.
    run_prefix: String,
    spoken: u64,
    player: Option<&'static str>,
}

const PREFIX: &str = "summary_";

impl Speaker {
    /// Checks that espeak-ng runs and the directory is writable; a clear error otherwise.
    pub fn new(config: SpeechConfig) -> Result<Self> {
        let out = Command::new("espeak-ng")
            .arg("--version")
            .output()
            .context("speak is on but espeak-ng cannot be run (install the Debian package espeak-ng; set-up does)")?;
        if !out.status.success() {
            bail!("espeak-ng --version failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("cannot create the speech directory {}", config.dir.display()))?;
        let probe = config.dir.join(".write_test");
        std::fs::write(&probe, b"").with_context(|| format!("cannot write in {}", config.dir.display()))?;
        let _ = std::fs::remove_file(probe);
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let player =
            (config.play && audio_output_present()).then(|| which("aplay").or_else(|| which("paplay"))).flatten();
        if config.play && player.is_none() {
            tracing::info!("speak: no audio output (no ALSA playback device, or no aplay/paplay): WAV files only");
        }
        Ok(Speaker { run_prefix: format!("{PREFIX}{}_", started.as_millis()), config, spoken: 0, player })
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Speaks `text` into a new WAV file (named after the first event it covers) and plays it
    /// when an audio output exists; returns the file's path.
    pub fn speak(&mut self, first_event_id: u64, text: &str) -> Result<PathBuf> {
        self.spoken += 1;
        let name = format!("{}{:05}_event{first_event_id}.wav", self.run_prefix, self.spoken);
        let path = self.config.dir.join(&name);
        let partial = self.config.dir.join(format!(".{name}.partial"));
        // The text goes in on stdin: a summary is data, never command-line options.
        let mut child = Command::new("espeak-ng")
            .args(["-v", &self.config.voice, "-s", &self.config.words_per_minute.to_string(), "--stdin", "-w"])
            .arg(&partial)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start espeak-ng")?;
        child.stdin.take().context("espeak-ng stdin")?.write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&partial);
            bail!("espeak-ng failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
        self.prune();
        if let Some(player) = self.player {
            // Not waited for: playback must not hold up the next summary's file.
            if let Err(e) = Command::new(player).arg(&path).stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
                tracing::warn!("speak: cannot start {player}: {e}");
            }
        }
        Ok(path)
    }

    /// Deletes our oldest files beyond `keep_files`.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.dir) else { return };
        let mut ours: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".wav"))
            })
            .collect();
        if ours.len() <= self.config.keep_files {
            return;
        }
        ours.sort();
        for old in &ours[..ours.len() - self.config.keep_files] {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// An ALSA playback device (`/dev/snd/pcmC<card>D<device>p`).
pub fn audio_output_present() -> bool {
    std::fs::read_dir("/dev/snd").is_ok_and(|d| {
        d.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("pcmC") && n.ends_with('p')))
    })
}

fn which(program: &'static str) -> Option<&'static str> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).any(|d| d.join(program).is_file()).then_some(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_samples(path: &Path) -> (u32, Vec<i16>) {
        let data = std::fs::read(path).unwrap();
        assert_eq!(&data[..4], b"RIFF");
        assert_eq!(&data[8..12], b"WAVE");
        let rate = u32::from_le_bytes(data[24..28].try_into().unwrap());
        let bits = u16::from_le_bytes(data[34..36].try_into().unwrap());
        assert_eq!(bits, 16);
        let body = data.windows(4).position(|w| w == b"data").unwrap() + 8;
        (rate, data[body..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect())
    }

    #[test]
    fn a_summary_is_spoken_into_an_audible_wav_and_old_files_are_pruned() {
        if Command::new("espeak-ng").arg("--version").output().is_err() {
            panic!("espeak-ng is not installed: run scripts/setup.sh");
        }
        let dir = std::env::temp_dir().join(format!("sf-speech-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config =
            SpeechConfig { dir: dir.clone(), voice: "en".into(), words_per_minute: 170, keep_files: 2, play: false };
        let mut s = Speaker::new(config).unwrap();
        let text = "Warning: a person entered the forward safety zone 3.1 m ahead. Seen by lidar and radar.";
        let path = s.speak(7, text).unwrap();
        assert!(path.file_name().unwrap().to_str().unwrap().ends_with("_00001_event7.wav"));
        let (rate, samples) = wav_samples(&path);
        let seconds = samples.len() as f64 / rate as f64;
        assert!(seconds > 2.0 * 0.5, "two sentences last {seconds:.2} s");
        let rms = (samples.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
        assert!(rms > 300.0, "not silence: rms {rms:.0}");
        // Options in the text are spoken, not obeyed.
        let p2 = s.speak(8, "--version -w /etc/passwd").unwrap();
        assert!(wav_samples(&p2).1.len() > 1000);
        s.speak(9, "Third.").unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(!path.exists(), "the oldest file is pruned");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let config = SpeechConfig {
            dir: "/proc/sf-no-such-dir".into(),
            voice: "en".into(),
            words_per_minute: 170,
            keep_files: 2,
            play: false,
        };
        let e = Speaker::new(config).err().unwrap().to_string();
        assert!(e.contains("speech directory") || e.contains("espeak-ng"), "{e}");
    }
}
