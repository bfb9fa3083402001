"""A pizza order taken over several turns: per-call state lives in `session`.

Run it:  flowapp serve examples.pizza:app
"""

from flowapp import BargeIn, FlowApp, Hangup, Session, Speak, UserSpeak

app = FlowApp(default_barge_in=BargeIn.immediate(allow_after_ms=400))

SIZES = ("small", "medium", "large")
TOPPINGS = ("cheese", "mushroom", "salami", "pepper", "olive")


@app.on_session_start
def welcome(event, session: Session):
    session["order"] = {"size": None, "toppings": []}
    return Speak(text="Welcome to Flow Pizza. Which size, small, medium or large?", user_input_timeout_seconds=10)


@app.on_user_speak
async def take_order(event: UserSpeak, session: Session):
    order = session["order"]
    words = event.text.lower()
    if order["size"] is None:
        size = next((s for s in SIZES if s in words), None)
        if size is None:
            return "Sorry, small, medium or large?"
        order["size"] = size
        return f"A {size} pizza. Which toppings?"
    if "that's all" in words or "nothing" in words or "done" in words:
        toppings = " and ".join(order["toppings"]) or "no extra toppings"
        return [
            Speak(
                text=f"One {order['size']} pizza with {toppings}. It will be there in thirty minutes. Goodbye!",
                barge_in=BargeIn.none(),
            ),
            Hangup(),
        ]
    added = [t for t in TOPPINGS if t in words and t not in order["toppings"]]
    order["toppings"].extend(added)
    if not added:
        return "We have cheese, mushroom, salami, pepper and olive. Anything else, or is that all?"
    return f"Added {', '.join(added)}. Anything else?"


@app.on_user_input_timeout
def still_there(event, session: Session):
    return "Are you still there? Tell me a size or a topping."
