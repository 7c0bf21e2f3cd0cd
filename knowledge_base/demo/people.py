"""Name and address material for the demo store's generated customers (all fictional)."""

from __future__ import annotations

FIRST_NAMES = (
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "Lucas",
    "Mia", "Mason", "Amelia", "Ethan", "Harper", "Logan", "Evelyn", "Aiden", "Abigail", "Jackson",
    "Emily", "Sebastian", "Ella", "Mateo", "Elizabeth", "Jack", "Camila", "Owen", "Luna",
    "Samuel", "Sofia", "Henry", "Avery", "Wyatt", "Mila", "Leo", "Aria", "Daniel", "Scarlett",
    "Michael", "Penelope", "Benjamin", "Layla", "Caleb", "Chloe", "Isaac", "Victoria", "Gabriel",
    "Madison", "Julian", "Eleanor", "Anthony", "Grace", "Dylan", "Nora", "Ryan", "Riley", "Nathan",
    "Zoey", "Aaron", "Hannah", "Priya", "Wei", "Aisha", "Diego", "Yuki", "Omar", "Fatima",
    "Santiago", "Mei", "Ravi", "Ingrid", "Tomas", "Keiko", "Malik", "Rosa",
)

LAST_NAMES = (
    "Johnson", "Smith", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Patel", "Kim", "Chen", "Singh",
    "Okafor", "Larsen", "Novak", "Tanaka", "Haddad", "Murphy", "Bennett", "Sullivan", "Foster",
    "Price", "Hughes", "Fischer", "Kowalski", "Ortiz", "Reyes", "Park",
)

STREETS = (
    "Maple Street", "Oak Avenue", "Cedar Lane", "Pine Street", "Elm Street", "Lakeview Drive",
    "Hillcrest Road", "Sunset Boulevard", "River Road", "Park Avenue", "Willow Way",
    "Aspen Court", "Forest Drive", "Highland Avenue", "Meadow Lane", "Spruce Street",
    "Canyon Road", "Juniper Drive", "Summit Avenue", "Birch Street", "Harbor View Drive",
    "Mill Creek Road", "Fir Street", "Alder Avenue", "Ridge Road", "Valley View Lane",
    "Prospect Street", "Cherry Lane", "Bay Street", "Trailhead Way",
)

# city, state, ZIP prefix (the last two digits are generated), phone area code
US_CITIES = (
    ("Portland", "OR", "972", "503"), ("Seattle", "WA", "981", "206"),
    ("Denver", "CO", "802", "303"), ("Boulder", "CO", "803", "720"),
    ("Salt Lake City", "UT", "841", "801"), ("Boise", "ID", "837", "208"),
    ("San Francisco", "CA", "941", "415"), ("Los Angeles", "CA", "900", "213"),
    ("San Diego", "CA", "921", "619"), ("Sacramento", "CA", "958", "916"),
    ("Phoenix", "AZ", "850", "602"), ("Flagstaff", "AZ", "860", "928"),
    ("Austin", "TX", "787", "512"), ("Dallas", "TX", "752", "214"),
    ("Minneapolis", "MN", "554", "612"), ("Chicago", "IL", "606", "312"),
    ("Madison", "WI", "537", "608"), ("Ann Arbor", "MI", "481", "734"),
    ("Burlington", "VT", "054", "802"), ("Portland", "ME", "041", "207"),
    ("Boston", "MA", "021", "617"), ("Brooklyn", "NY", "112", "718"),
    ("Asheville", "NC", "288", "828"), ("Atlanta", "GA", "303", "404"),
    ("Nashville", "TN", "372", "615"), ("Missoula", "MT", "598", "406"),
    ("Anchorage", "AK", "995", "907"), ("Honolulu", "HI", "968", "808"),
    ("Bend", "OR", "977", "541"), ("Spokane", "WA", "992", "509"),
)

# A few customers abroad, in the countries the shipping policy lists (DHL Express).
INTL_ADDRESSES = (
    {"city": "Vancouver", "state": "BC", "zip": "V6B 1A1", "country": "Canada", "phone": "+1 604"},
    {"city": "Toronto", "state": "ON", "zip": "M5V 2T6", "country": "Canada", "phone": "+1 416"},
    {"city": "London", "state": "", "zip": "N1 9GU", "country": "United Kingdom",
     "phone": "+44 20"},
    {"city": "Munich", "state": "", "zip": "80331", "country": "Germany", "phone": "+49 89"},
    {"city": "Melbourne", "state": "VIC", "zip": "3000", "country": "Australia", "phone": "+61 3"},
    {"city": "Tokyo", "state": "", "zip": "150-0001", "country": "Japan", "phone": "+81 3"},
)

EMAIL_DOMAINS = ("example.com", "example.net", "example.org")

CARD_BRANDS = ("Visa", "Visa", "Mastercard", "Mastercard", "American Express", "Discover")

RETURN_REASONS = (
    "Too small", "Too large", "Changed my mind", "Colour different from the photos",
    "Arrived too late", "Ordered two sizes, returning one", "Not as warm as expected",
    "Found a better fit elsewhere", "Uncomfortable", "Defective zipper",
)

EXCHANGE_REASONS = ("Too small", "Too large", "Wrong colour for me", "Need a longer length")
