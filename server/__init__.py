"""SarahService: the conversation-state gRPC server of the Sarah WhatsApp bot."""
