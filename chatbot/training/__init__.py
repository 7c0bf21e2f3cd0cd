"""Fine-tuning: the supervised-set builder, the CPU LoRA loop and the adapter's model card.

``chatbot train`` wires them: :mod:`.scenarios` asks the real answering pipeline what it
would show the model for each question, :mod:`.replies` writes the target from those
facts, :mod:`.dataset` tokenises with the server's prompt builder and masks the prompt,
:mod:`.lora` trains, :mod:`.card` writes the README.
"""
