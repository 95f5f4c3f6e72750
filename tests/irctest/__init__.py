"""irctest's controller for gchat (`make irctest`); see gchat_controller.py."""
