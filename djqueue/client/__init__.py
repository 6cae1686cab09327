"""The client side: the app object, tasks, publishing, routing, annotations and remote control as a sender."""
