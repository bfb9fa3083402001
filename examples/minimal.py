"""The smallest flowapp app: greet, then repeat what the caller said.

Run it:  flowapp serve examples.minimal:app
"""

from flowapp import FlowApp, UserSpeak

app = FlowApp()


@app.on_session_start
def greet(event):
    return "Hello! Say something and I will repeat it."


@app.on_user_speak
def echo(event: UserSpeak):
    return f"You said: {event.text}"
