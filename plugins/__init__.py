"""Built-in x2vlm plugins, registered through entry points like any third-party plugin."""
