"""Self-hostable, grounded customer-service chatbot for online stores."""

__version__ = "0.1.0"
