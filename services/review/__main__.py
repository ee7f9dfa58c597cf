from services.review.server import main

main()
