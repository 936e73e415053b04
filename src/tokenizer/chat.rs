//! The chat layout. Only ChatML (`<|im_start|>role\n…<|im_end|>\n`) is supported: the GGUF's
//! Jinja template is recognised, not interpreted, and a model whose template is something
//! else gets [`super::TokenizerError::NoChatTemplate`] in chat mode.

/// A recognised chat template.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatTemplate {
    ChatMl,
}

impl ChatTemplate {
    /// Recognises ChatML in a GGUF `tokenizer.chat_template`.
    pub fn detect(template: &str) -> Option<Self> {
        (template.contains("<|im_start|>") && template.contains("<|im_end|>"))
            .then_some(ChatTemplate::ChatMl)
    }

    /// One user turn, optionally after a system turn, ending where the assistant speaks.
    pub fn render(&self, message: &str, system: Option<&str>) -> String {
        let mut s = String::new();
        if let Some(sys) = system {
            s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
        }
        s.push_str(&format!(
            "<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"
        ));
        s
    }
}
