//! Which chat-template family llama.cpp would recognise in a GGUF's
//! `tokenizer.chat_template`, and a short, printable description of the template for
//! `pack-usb`, `inspect` and `models`.
//!
//! This is a **heuristic** that mirrors `llm_chat_detect_template` of the llama.cpp the
//! launcher is built with (llama-cpp-sys-2 0.1.161, `src/llama-chat.cpp`): llama.cpp does
//! not evaluate the Jinja template; it picks one of its built-in formats by looking for
//! marker strings, and `offgrid run` falls back to ChatML when none matches (SPEC.md
//! §10.5). The table below checks the same markers in the same order, so it answers
//! without llama.cpp (builds without the `llama` feature, HQ packing). Known gaps: a
//! newer llama.cpp may know more families; a template naming a family by its bare name
//! (`chatml`, `llama3`) is recognised by llama.cpp but not here (GGUFs carry Jinja).

/// `(family, markers that must all occur)`, in llama.cpp's order of detection.
const FAMILIES: &[(&str, &[&str])] = &[
    ("phi4", &["<|im_start|>", "<|im_sep|>"]),
    ("smolvlm", &["<|im_start|>", "<end_of_utterance>"]),
    ("chatml", &["<|im_start|>"]),
    ("mistral/llama2", &["[INST]"]),
    ("phi3", &["<|assistant|>", "<|end|>"]),
    ("chatglm4", &["[gMASK]<sop>"]),
    ("falcon3", &["<|assistant|>", "<|user|>"]),
    ("zephyr", &["<|user|>", "<|endoftext|>"]),
    ("monarch", &["bos_token + message['role']"]),
    ("gemma", &["<start_of_turn>"]),
    ("orion", &["'\\n\\nAssistant: ' + eos_token"]),
    ("openchat", &["GPT4 Correct "]),
    ("vicuna", &["USER: ", "ASSISTANT: "]),
    ("deepseek", &["### Instruction:", "<|EOT|>"]),
    ("command-r", &["<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"]),
    ("llama3", &["<|start_header_id|>", "<|end_header_id|>"]),
    ("chatglm3", &["[gMASK]sop"]),
    ("minicpm", &["<用户>"]),
    (
        "deepseek2",
        &["'Assistant: ' + message['content'] + eos_token"],
    ),
    (
        "deepseek3",
        &["<｜Assistant｜>", "<｜User｜>", "<｜end▁of▁sentence｜>"],
    ),
    ("exaone3", &["[|system|]", "[|assistant|]", "[|endofturn|]"]),
    ("rwkv-world", &["rwkv-world"]),
    ("granite", &["<|start_of_role|>"]),
    ("megrez", &["<|role_start|>"]),
    ("yandex", &[" Ассистент:"]),
    ("bailing", &["<role>ASSISTANT</role>", "'HUMAN'"]),
    ("llama4", &["<|header_start|>", "<|header_end|>"]),
    ("dots1", &["<|endofuserprompt|>"]),
    ("hunyuan-moe", &["<|extra_0|>", "<|extra_4|>"]),
    ("gpt-oss", &["<|start|>", "<|channel|>"]),
    ("kimi-k2", &["<|im_assistant|>assistant<|im_middle|>"]),
];

/// The longest excerpt of a template shown to a user.
pub const EXCERPT_CHARS: usize = 60;

/// The family llama.cpp would use for `template`, or `None` when it would not recognise
/// it (and `offgrid run` would use ChatML).
pub fn family(template: &str) -> Option<&'static str> {
    FAMILIES
        .iter()
        .find(|(_, markers)| markers.iter().all(|m| template.contains(m)))
        .map(|(name, _)| *name)
}

/// A template as shown to a user: its family, its first non-blank line cut to
/// [`EXCERPT_CHARS`] printable characters, and its size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplateSummary {
    /// `None`: llama.cpp would not recognise it.
    pub family: Option<&'static str>,
    pub first_line: String,
    pub bytes: usize,
}

impl TemplateSummary {
    pub fn of(template: &str) -> TemplateSummary {
        let line = template
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        let mut first_line: String = line
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(EXCERPT_CHARS)
            .collect();
        if line.chars().count() > EXCERPT_CHARS {
            first_line.push('…');
        }
        TemplateSummary {
            family: family(template),
            first_line,
            bytes: template.len(),
        }
    }

    /// `chatml ("{% for message in messages %}…", 612 bytes)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (\"{}\", {} bytes)",
            self.family.unwrap_or("unknown to llama.cpp"),
            self.first_line,
            self.bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let smol = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        assert_eq!(family(smol), Some("chatml"));
        assert_eq!(
            family("{{ '<|start_header_id|>' + role + '<|end_header_id|>' }}"),
            Some("llama3")
        );
        assert_eq!(family("{{ '<start_of_turn>user' }}"), Some("gemma"));
        assert_eq!(family("{{ messages }}"), None);
        assert_eq!(family(""), None);
    }

    #[test]
    fn summary_is_bounded_and_printable() {
        let t = format!("\n  {}\x07\nsecond", "x".repeat(200));
        let s = TemplateSummary::of(&t);
        assert_eq!(s.first_line.chars().count(), EXCERPT_CHARS + 1);
        assert!(s.first_line.ends_with('…'));
        assert_eq!(s.family, None);
        assert_eq!(s.bytes, t.len());
        assert!(s.describe().starts_with("unknown to llama.cpp (\""));
    }
}
